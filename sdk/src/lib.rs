//! Parley client engine (filled by the SDK issue).
