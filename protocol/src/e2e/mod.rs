//! End-to-end sessions: hybrid X3DH (PQXDH-style) session setup and the Double Ratchet.
//!
//! Filled by the end-to-end session work; the server never uses this module.
