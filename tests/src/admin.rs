//! The operator's side of a server in tests: plain HTTP GETs to its admin listener, and
//! a strict reader of the Prometheus text exposition format.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` on the admin listener: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut response),
    )
    .await
    .context("admin response timed out")??;
    let response = String::from_utf8(response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of headers")?;
    let status = head
        .split(' ')
        .nth(1)
        .context("no status")?
        .parse::<u16>()?;
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .context("no Content-Length")?
        .parse::<usize>()?;
    if length != body.len() {
        bail!("Content-Length {length} but {} bytes of body", body.len());
    }
    Ok((status, body.to_owned()))
}

/// One sample: metric name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`, `_sum`, `_count` for histograms).
    pub name: String,
    /// Labels, in order.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

/// A parsed scrape.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// `# TYPE` of each metric family.
    pub types: HashMap<String, String>,
}

impl Scrape {
    /// The value of `name` with exactly these labels, if present.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && s.labels
                        .iter()
                        .zip(labels)
                        .all(|((k, v), (k2, v2))| k == k2 && v == v2)
            })
            .map(|s| s.value)
    }
}

/// Parses the text exposition format (0.0.4) strictly: every family has `# HELP` and
/// `# TYPE` before its samples, names and labels are well-formed, values are numbers,
/// histogram buckets are cumulative and end with `+Inf` equal to `_count`.
pub fn parse_exposition(text: &str) -> anyhow::Result<Scrape> {
    let mut scrape = Scrape::default();
    let mut helped = std::collections::HashSet::new();
    for (number, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line}", number + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').with_context(at)?;
            check_name(name).with_context(at)?;
            helped.insert(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').with_context(at)?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                bail!("unknown type at {}", at());
            }
            if !helped.contains(name) {
                bail!("TYPE before HELP at {}", at());
            }
            scrape.types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let sample = parse_sample(line).with_context(at)?;
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = sample.name.strip_suffix(suffix)?;
                (scrape.types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(&sample.name);
        if !scrape.types.contains_key(family) {
            bail!("sample without a TYPE at {}", at());
        }
        if scrape.types.get(family).map(String::as_str) == Some("counter") && sample.value < 0.0 {
            bail!("negative counter at {}", at());
        }
        scrape.samples.push(sample);
    }
    check_histograms(&scrape)?;
    Ok(scrape)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        bail!("bad metric name {name:?}");
    }
    Ok(())
}

fn parse_sample(line: &str) -> anyhow::Result<Sample> {
    let (series, value) = line.rsplit_once(' ').context("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().context("value is not a number")?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}').context("unclosed labels")?;
            (name, parse_labels(body)?)
        }
    };
    check_name(name)?;
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn parse_labels(mut body: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut labels = Vec::new();
    while !body.is_empty() {
        let (key, rest) = body.split_once("=\"").context("label without =\"")?;
        check_name(key)?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => bail!("unterminated label value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => bail!("bad escape in label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        body = rest.get(end + 1..).unwrap_or_default();
        body = body.strip_prefix(',').unwrap_or(body);
    }
    Ok(labels)
}

fn check_histograms(scrape: &Scrape) -> anyhow::Result<()> {
    for (family, kind) in &scrape.types {
        if kind != "histogram" {
            continue;
        }
        let buckets: Vec<&Sample> = scrape
            .samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
            .collect();
        if buckets.windows(2).any(|w| w[0].value > w[1].value) {
            bail!("{family}: buckets are not cumulative");
        }
        let last = buckets.last().context("histogram without buckets")?;
        if last.labels.first().map(|(k, v)| (k.as_str(), v.as_str())) != Some(("le", "+Inf")) {
            bail!("{family}: last bucket is not +Inf");
        }
        let count = scrape
            .value(&format!("{family}_count"), &[])
            .context("histogram without _count")?;
        if (count - last.value).abs() > f64::EPSILON {
            bail!("{family}: +Inf bucket {} != count {count}", last.value);
        }
        scrape
            .value(&format!("{family}_sum"), &[])
            .context("histogram without _sum")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_accepts_good_text_and_refuses_bad() {
        let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{code=\"x\\\"y\"} 3\n";
        let scrape = parse_exposition(good).unwrap();
        assert_eq!(scrape.value("a_total", &[("code", "x\"y")]), Some(3.0));
        assert!(parse_exposition("a_total 3\n").is_err(), "no TYPE");
        assert!(parse_exposition("# HELP a A.\n# TYPE a gauge\na{b=\"c} 1\n").is_err());
        assert!(parse_exposition("# HELP a A.\n# TYPE a gauge\na one\n").is_err());
    }
}
