//! What every connection shares: configuration, the store, the delivery registry, the
//! rate limiters, the metrics, and the server's identity.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parley_protocol::business::AuthorityKey;
use parley_protocol::ids::{AccountId, DeviceAddress, ServerId};

use crate::config::Config;
use crate::limits::Limit;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::store::{ReportPolicy, Store};

pub use crate::limits::RATE_LIMIT_MAX_KEYS;

/// The limits per account and per address (see [`crate::limits`]).
#[derive(Debug)]
pub struct Limiters {
    /// Registrations per source IP.
    pub registrations: Limit<IpAddr>,
    /// Failed authentications per source address.
    pub auth_failures: Limit<IpAddr>,
    /// Bundle fetches per requesting account.
    pub bundle_requester: Limit<AccountId>,
    /// Bundle fetches per (requesting account, target device).
    pub bundle_target: Limit<(AccountId, DeviceAddress)>,
    /// Lookups of handles that do not exist, per account.
    pub failed_handle_lookups: Limit<AccountId>,
    /// Linking codes opened, per account.
    pub link_codes: Limit<AccountId>,
    /// Linking codes joined, per source address.
    pub link_joins: Limit<IpAddr>,
}

impl Limiters {
    /// Limiters configured from `config`.
    pub fn new(config: &Config) -> Limiters {
        let hour = Duration::from_secs(3600);
        let minute = Duration::from_secs(60);
        Limiters {
            registrations: Limit::new("registrations", config.registrations_per_ip_per_hour, hour),
            auth_failures: Limit::new("auth_failures", config.auth_failures_per_ip_per_hour, hour),
            bundle_requester: Limit::new(
                "bundle_fetches",
                config.bundle_fetches_per_minute,
                minute,
            ),
            bundle_target: Limit::new(
                "bundle_fetches_per_target",
                config.bundle_fetches_per_target_per_minute,
                minute,
            ),
            failed_handle_lookups: Limit::new(
                "failed_handle_lookups",
                config.failed_handle_lookups_per_minute,
                minute,
            ),
            link_codes: Limit::new("link_codes", config.link_codes_per_account_per_hour, hour),
            link_joins: Limit::new("link_joins", config.link_joins_per_ip_per_hour, hour),
        }
    }
}

/// State shared by all connections of one server.
#[derive(Debug)]
pub struct Shared {
    /// Effective configuration.
    pub config: Config,
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Connected devices (also told of every committed envelope).
    pub presence: Arc<dyn Presence>,
    /// Rate limiters.
    pub limiters: Limiters,
    /// This deployment's identity, bound into auth signatures.
    pub server_id: ServerId,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// TLS for the client listener, when configured.
    pub tls: Option<crate::tls::Acceptor>,
    /// The verification authority's public key, for `fetch_business`.
    pub authority: AuthorityKey,
    /// The server's clock (shifted by `--test-clock-offset`).
    pub clock: Clock,
}

impl Shared {
    /// Milliseconds since the Unix epoch, by the server's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The automatic suspension rule, from the configuration.
    pub fn report_policy(&self) -> ReportPolicy {
        ReportPolicy {
            suspend_after: self.config.suspend_after_reports,
            window_ms: duration_ms(self.config.report_window),
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub use crate::clock::Clock;
