//! Where telemetry goes: the standard `OTEL_*` variables (or flags standing in for them),
//! resolved once into a [`Config`] that a host hands on to its providers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How OTLP travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// `http/protobuf`: a POST of the protobuf request to `/v1/traces` or `/v1/metrics`.
    HttpProtobuf,
    /// `grpc`: the collector's gRPC service, over HTTP/2 (plaintext or TLS by the URL's scheme).
    Grpc,
}

impl Protocol {
    /// The name `OTEL_EXPORTER_OTLP_PROTOCOL` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::Grpc => "grpc",
        }
    }
}

/// What is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signal {
    /// Spans.
    Traces,
    /// Metrics.
    Metrics,
}

impl Signal {
    /// `TRACES` or `METRICS`, as in `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    fn var(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
        }
    }

    fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
        }
    }
}

/// Where one signal goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// How.
    pub protocol: Protocol,
    /// The URL requests go to: with the signal's path (HTTP), or the collector's address (gRPC).
    pub url: String,
    /// Extra request headers (`OTEL_EXPORTER_OTLP_HEADERS`), for a collector that wants a key.
    pub headers: Vec<(String, String)>,
}

/// Where and as whom to export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Spans go here; `None`: not exported.
    pub traces: Option<Endpoint>,
    /// Metrics go here; `None`: not exported (Prometheus scrapes still work).
    pub metrics: Option<Endpoint>,
    /// How often metrics are pushed (`OTEL_METRIC_EXPORT_INTERVAL`, default 60 s).
    pub metrics_interval: Duration,
    /// `service.name`.
    pub service_name: String,
    /// More resource attributes (`OTEL_RESOURCE_ATTRIBUTES`, host id, ...).
    pub resource: Vec<(String, String)>,
}

/// A telemetry variable Trellis cannot follow.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Not `grpc` or `http/protobuf`.
    #[error("{var}={value}: Trellis exports OTLP as `grpc` or `http/protobuf`")]
    Protocol {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
    },
    /// Not `otlp` or `none`.
    #[error("{var}={value}: Trellis exports `otlp` or `none`")]
    Exporter {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
    },
    /// Not a whole number of milliseconds.
    #[error("{var}={value}: not a whole number of milliseconds above 0")]
    Interval {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
    },
    /// Not `key=value,...`.
    #[error("{var}: `{item}` is not `key=value`")]
    Pair {
        /// The variable.
        var: String,
        /// The item that is not a pair.
        item: String,
    },
    /// A sampler the SDK does not have, or a ratio that is not one.
    #[error(
        "{var}={value}: Trellis samples with `parentbased_always_on` (default), \
         `parentbased_traceidratio`, `traceidratio` (OTEL_TRACES_SAMPLER_ARG a ratio from 0 to 1), \
         `always_on`, `always_off` or `parentbased_always_off`"
    )]
    Sampler {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
    },
    /// Not an `http://` or `https://` URL.
    #[error("{var}={value}: not an http:// or https:// URL")]
    Url {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
    },
}

impl Config {
    /// The standard variables, read through `var`:
    /// - `OTEL_EXPORTER_OTLP_ENDPOINT` (the signal's path is appended for `http/protobuf`), or
    ///   per signal `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT` (used as is);
    /// - `OTEL_EXPORTER_OTLP[_{TRACES,METRICS}]_PROTOCOL`: `http/protobuf` (default) or `grpc`;
    /// - `OTEL_EXPORTER_OTLP[_{TRACES,METRICS}]_HEADERS`: `key=value,...` (values
    ///   percent-decoded);
    /// - `OTEL_{TRACES,METRICS}_EXPORTER`: `otlp` (default) or `none`; `OTEL_SDK_DISABLED=true`;
    /// - `OTEL_METRIC_EXPORT_INTERVAL` (ms), `OTEL_SERVICE_NAME` (else `default_service`),
    ///   `OTEL_RESOURCE_ATTRIBUTES` (`key=value,...`);
    /// - `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` are checked here (the SDK reads
    ///   them, in every process, hosts' and providers').
    ///
    /// `None` when neither signal has somewhere to go.
    pub fn from_vars(
        default_service: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let var = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let traces = endpoint(Signal::Traces, &var)?;
        let metrics = endpoint(Signal::Metrics, &var)?;
        if traces.is_none() && metrics.is_none() {
            return Ok(None);
        }
        // The SDK reads the sampler itself and falls back to the default, silently, on a value
        // it does not know: a typo would sample everything.
        check_sampler(&var)?;
        let interval_var = "OTEL_METRIC_EXPORT_INTERVAL";
        let metrics_interval = match var(interval_var) {
            None => Duration::from_secs(60),
            Some(value) => match value.parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => return Err(ConfigError::Interval { var: interval_var.into(), value }),
            },
        };
        let resource = match var("OTEL_RESOURCE_ATTRIBUTES") {
            Some(attrs) => pairs("OTEL_RESOURCE_ATTRIBUTES", &attrs)?,
            None => Vec::new(),
        };
        Ok(Some(Self {
            traces,
            metrics,
            metrics_interval,
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service.to_owned()),
            resource,
        }))
    }
}

/// Where `signal` goes, if anywhere.
fn endpoint(
    signal: Signal,
    var: &impl Fn(&str) -> Option<String>,
) -> Result<Option<Endpoint>, ConfigError> {
    let s = signal.var();
    let exporter_var = format!("OTEL_{s}_EXPORTER");
    match var(&exporter_var).as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => {
            return Err(ConfigError::Exporter { var: exporter_var, value: other.to_owned() });
        }
    }
    // The signal's own variable wins over the general one.
    let either = |suffix: &str| {
        let own = format!("OTEL_EXPORTER_OTLP_{s}_{suffix}");
        match var(&own) {
            Some(value) => Some((own, value)),
            None => {
                let general = format!("OTEL_EXPORTER_OTLP_{suffix}");
                var(&general).map(|value| (general, value))
            }
        }
    };
    let protocol = match either("PROTOCOL") {
        None => Protocol::HttpProtobuf,
        Some((_, p)) if p == "http/protobuf" => Protocol::HttpProtobuf,
        Some((_, p)) if p == "grpc" => Protocol::Grpc,
        Some((var, value)) => return Err(ConfigError::Protocol { var, value }),
    };
    let own = format!("OTEL_EXPORTER_OTLP_{s}_ENDPOINT");
    let (url_var, url) = match (var(&own), var("OTEL_EXPORTER_OTLP_ENDPOINT")) {
        // A signal's own endpoint is the full URL for HTTP.
        (Some(url), _) => (own, url),
        (None, Some(base)) => {
            let base = base.trim_end_matches('/');
            let url = match protocol {
                Protocol::HttpProtobuf => format!("{base}{}", signal.http_path()),
                Protocol::Grpc => base.to_owned(),
            };
            ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), url)
        }
        (None, None) => return Ok(None),
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ConfigError::Url { var: url_var, value: url });
    }
    // The signal's own headers replace the general ones (they are not merged).
    let mut headers = match either("HEADERS") {
        Some((var, h)) => pairs(&var, &h)?,
        None => Vec::new(),
    };
    for (k, _) in &mut headers {
        k.make_ascii_lowercase();
    }
    Ok(Some(Endpoint { protocol, url, headers }))
}

/// `OTEL_TRACES_SAMPLER` names a sampler the SDK has, and a ratio sampler's
/// `OTEL_TRACES_SAMPLER_ARG` is a ratio.
fn check_sampler(var: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    let bad = |var: &str, value: String| Err(ConfigError::Sampler { var: var.into(), value });
    let (sampler_var, arg_var) = ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG");
    match var(sampler_var).as_deref() {
        None
        | Some("always_on" | "always_off" | "parentbased_always_on" | "parentbased_always_off") => {
            Ok(())
        }
        Some("traceidratio" | "parentbased_traceidratio") => match var(arg_var) {
            None => Ok(()),
            Some(arg) if arg.parse::<f64>().is_ok_and(|r| (0.0..=1.0).contains(&r)) => Ok(()),
            Some(arg) => bad(arg_var, arg),
        },
        Some(other) => bad(sampler_var, other.to_owned()),
    }
}

/// `key=value,key=value`, values percent-decoded (the W3C baggage format the OTEL variables use).
fn pairs(var: &str, text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    text.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_owned(), percent_decode(v.trim())))
            }
            _ => Err(ConfigError::Pair { var: var.to_owned(), item: item.to_owned() }),
        })
        .collect()
}

/// `%XX` escapes decoded (the W3C baggage format the OTLP header variables use); anything
/// malformed is kept as written.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Option<Config>, ConfigError> {
        let vars: Vec<(String, String)> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_vars("svc", |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn nothing_set_exports_nothing() {
        assert_eq!(config(&[]), Ok(None));
        let off = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_SDK_DISABLED", "true")];
        assert_eq!(config(&off), Ok(None));
    }

    #[test]
    fn one_endpoint_serves_both_signals_by_protocol() {
        let c = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]).unwrap().unwrap();
        assert_eq!(c.traces.unwrap().url, "http://c:4318/v1/traces");
        assert_eq!(c.metrics.as_ref().unwrap().url, "http://c:4318/v1/metrics");
        assert_eq!(c.metrics_interval, Duration::from_secs(60));
        assert_eq!(c.service_name, "svc");

        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "5000"),
        ])
        .unwrap()
        .unwrap();
        let traces = c.traces.unwrap();
        assert_eq!(traces.protocol, Protocol::Grpc);
        // gRPC names the method itself: the URL is the collector's address.
        assert_eq!(traces.url, "http://c:4317");
        assert_eq!(c.metrics.unwrap().url, "http://c:4317");
        assert_eq!(c.metrics_interval, Duration::from_millis(5000));
    }

    #[test]
    fn a_signals_own_variables_win() {
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://t.example/otlp/traces"),
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=a%20b, tenant=t1"),
            ("OTEL_SERVICE_NAME", "edge"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "authorization=Bearer%20t"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,team=a%2Cb"),
        ])
        .unwrap()
        .unwrap();
        let traces = c.traces.unwrap();
        assert_eq!(traces.url, "https://t.example/otlp/traces");
        // The signal's own headers replace the general ones.
        assert_eq!(traces.headers, vec![("authorization".into(), "Bearer t".into())]);
        assert!(c.metrics.is_none());
        assert_eq!(c.service_name, "edge");
        let resource =
            vec![("deployment.environment".into(), "prod".into()), ("team".into(), "a,b".into())];
        assert_eq!(c.resource, resource);
        let general = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=a%20b, tenant=t1"),
        ])
        .unwrap()
        .unwrap();
        let expected = vec![("x-api-key".into(), "a b".into()), ("tenant".into(), "t1".into())];
        assert_eq!(general.metrics.unwrap().headers, expected);
    }

    #[test]
    fn bad_values_are_named() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let err = config(&[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap_err();
        assert!(err.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL=http/json"), "{err}");
        let err = config(&[base, ("OTEL_METRIC_EXPORT_INTERVAL", "soon")]).unwrap_err();
        assert!(err.to_string().contains("milliseconds"), "{err}");
        let err = config(&[base, ("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert!(err.to_string().contains("OTEL_TRACES_EXPORTER=zipkin"), "{err}");
        let err = config(&[base, ("OTEL_EXPORTER_OTLP_HEADERS", "novalue")]).unwrap_err();
        assert!(err.to_string().contains("`novalue`"), "{err}");
        let err = config(&[base, ("OTEL_TRACES_SAMPLER", "ratio")]).unwrap_err();
        assert!(err.to_string().contains("OTEL_TRACES_SAMPLER=ratio"), "{err}");
        let ratio = ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio");
        let err = config(&[base, ratio, ("OTEL_TRACES_SAMPLER_ARG", "10%")]).unwrap_err();
        assert!(err.to_string().contains("OTEL_TRACES_SAMPLER_ARG=10%"), "{err}");
        assert!(config(&[base, ratio, ("OTEL_TRACES_SAMPLER_ARG", "0.25")]).is_ok());
        let err = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4318")]).unwrap_err();
        assert!(err.to_string().contains("http://"), "{err}");
    }
}
