//! Where profiles live on disk.

use std::path::PathBuf;

/// File name of a profile's database.
pub const PROFILE_DATABASE: &str = "client.db";

/// The default home: `$XDG_DATA_HOME/parley`, else `~/.local/share/parley`, else
/// `./.parley`.
pub fn default_home() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("parley");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/share/parley");
    }
    PathBuf::from(".parley")
}

/// The database of `profile` under `home`. Profile names are plain: letters, digits,
/// `-` and `_`.
pub fn profile_database(home: Option<PathBuf>, profile: &str) -> anyhow::Result<PathBuf> {
    let valid = !profile.is_empty()
        && profile.len() <= 64
        && profile
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        anyhow::bail!("invalid profile name '{profile}': use letters, digits, '-' and '_'");
    }
    Ok(home
        .unwrap_or_else(default_home)
        .join(profile)
        .join(PROFILE_DATABASE))
}
