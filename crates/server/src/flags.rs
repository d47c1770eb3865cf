//! Command-line flags every role of the binary shares, named as kube-apiserver's: the serving
//! certificate and client CA (`--tls-cert-file`, `--tls-private-key-file`, `--client-ca-file`)
//! and the front proxy's request-header authentication (`--requestheader-*`). Each role flattens
//! [`TlsFlags`] and [`FrontProxyFlags`] into its subcommand and hands them to
//! `crate::tls::prepare`; this module only describes and parses them. [`ShutdownFlags`] are
//! kube-apiserver's graceful-shutdown flags; [`parse_duration`] reads Go durations as its flags do.

use std::path::PathBuf;

use crate::authn::{DEFAULT_EXTRA_HEADERS_PREFIX, DEFAULT_GROUP_HEADER, DEFAULT_USERNAME_HEADER};

/// Serving certificate and client CA. Without them the server uses the PKI it generates in its
/// data directory (`ca.crt`, `serving.crt`, `admin.crt`).
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFlags {
    /// Serving certificate (PEM: the certificate, then any intermediates) used instead of the
    /// generated `serving.crt`; needs --tls-private-key-file.
    ///
    /// The admin kubeconfig's certificate-authority-data then is the generated CA if this
    /// certificate chains to it, otherwise the last certificate of this file (the root of the
    /// chain, or the certificate itself when it is alone).
    #[arg(long, value_name = "FILE", requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert-file.
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,

    /// CA bundle (PEM) verifying client certificates (CN = user, O = groups) instead of the
    /// generated CA.
    ///
    /// The generated admin client certificate (CN admin, O system:masters) is still written to
    /// the admin kubeconfig, but is accepted only if this bundle trusts the generated CA
    /// (`ca.crt` in the data directory); a warning at start says when it does not.
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
}

/// Front proxy (kube-apiserver's request-header authenticator): a client certificate signed by
/// the request-header CA, with an allowed common name, lets the proxy name the user in request
/// headers. Those headers are ignored on every other connection.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct FrontProxyFlags {
    /// CA bundle (PEM) of front-proxy client certificates. Without it no request headers are
    /// honoured.
    ///
    /// A certificate of this CA authenticates as its own CN only if --client-ca-file (or the
    /// generated CA) also trusts it.
    #[arg(long, value_name = "FILE")]
    pub requestheader_client_ca_file: Option<PathBuf>,

    /// Common names of front-proxy client certificates (comma list). Empty: any certificate
    /// signed by --requestheader-client-ca-file.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub requestheader_allowed_names: Vec<String>,

    /// Request headers naming the user, in order: the first non-empty one wins (comma list).
    #[arg(
        long,
        value_name = "HEADERS",
        value_delimiter = ',',
        default_value = DEFAULT_USERNAME_HEADER
    )]
    pub requestheader_username_headers: Vec<String>,

    /// Request headers naming the user's groups; every value of every one is a group (comma
    /// list).
    #[arg(
        long,
        value_name = "HEADERS",
        value_delimiter = ',',
        default_value = DEFAULT_GROUP_HEADER
    )]
    pub requestheader_group_headers: Vec<String>,

    /// Prefixes of request headers carrying extra user attributes: `<prefix><key>: <value>`,
    /// the key lowercased and percent-decoded (comma list).
    #[arg(
        long,
        value_name = "PREFIXES",
        value_delimiter = ',',
        default_value = DEFAULT_EXTRA_HEADERS_PREFIX
    )]
    pub requestheader_extra_headers_prefix: Vec<String>,
}

impl Default for FrontProxyFlags {
    /// The command line's defaults: no request-header CA, any name, `X-Remote-User`,
    /// `X-Remote-Group`, `X-Remote-Extra-`.
    fn default() -> Self {
        Self {
            requestheader_client_ca_file: None,
            requestheader_allowed_names: Vec::new(),
            requestheader_username_headers: vec![DEFAULT_USERNAME_HEADER.to_owned()],
            requestheader_group_headers: vec![DEFAULT_GROUP_HEADER.to_owned()],
            requestheader_extra_headers_prefix: vec![DEFAULT_EXTRA_HEADERS_PREFIX.to_owned()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory as _, Parser};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        tls: TlsFlags,
        #[command(flatten)]
        front_proxy: FrontProxyFlags,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("replication-vw").chain(args.iter().copied()))
    }

    #[test]
    fn without_flags_the_header_names_are_kubes_defaults_and_nothing_is_replaced() {
        let cli = parse(&[]).expect("parses");
        assert_eq!(cli.tls, TlsFlags::default());
        assert_eq!(cli.front_proxy, FrontProxyFlags::default());
        assert_eq!(
            cli.front_proxy.requestheader_username_headers,
            vec!["X-Remote-User"]
        );
        assert_eq!(
            cli.front_proxy.requestheader_group_headers,
            vec!["X-Remote-Group"]
        );
        assert_eq!(
            cli.front_proxy.requestheader_extra_headers_prefix,
            vec!["X-Remote-Extra-"]
        );
    }

    #[test]
    fn header_and_name_flags_accept_comma_lists() {
        let cli = parse(&[
            "--requestheader-client-ca-file",
            "/etc/front-proxy-ca.crt",
            "--requestheader-allowed-names=front-proxy,aggregator",
            "--requestheader-username-headers=X-Remote-User,X-Forwarded-User",
            "--requestheader-group-headers",
            "X-Remote-Group,X-Forwarded-Groups",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-,X-Forwarded-Extra-",
        ])
        .expect("parses");
        let fp = cli.front_proxy;
        assert_eq!(
            fp.requestheader_client_ca_file,
            Some(PathBuf::from("/etc/front-proxy-ca.crt"))
        );
        assert_eq!(
            fp.requestheader_allowed_names,
            vec!["front-proxy", "aggregator"]
        );
        assert_eq!(
            fp.requestheader_username_headers,
            vec!["X-Remote-User", "X-Forwarded-User"]
        );
        assert_eq!(
            fp.requestheader_group_headers,
            vec!["X-Remote-Group", "X-Forwarded-Groups"]
        );
        assert_eq!(
            fp.requestheader_extra_headers_prefix,
            vec!["X-Remote-Extra-", "X-Forwarded-Extra-"]
        );
    }

    #[test]
    fn tls_cert_file_without_its_key_is_refused_on_the_command_line() {
        let err = parse(&["--tls-cert-file", "serving.crt"]).expect_err("must fail");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let err = parse(&["--tls-private-key-file", "serving.key"]).expect_err("must fail");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let cli = parse(&[
            "--tls-cert-file=serving.crt",
            "--tls-private-key-file=serving.key",
            "--client-ca-file=clients.crt",
        ])
        .expect("parses");
        assert_eq!(cli.tls.tls_cert_file, Some(PathBuf::from("serving.crt")));
        assert_eq!(
            cli.tls.tls_private_key_file,
            Some(PathBuf::from("serving.key"))
        );
        assert_eq!(cli.tls.client_ca_file, Some(PathBuf::from("clients.crt")));
    }

    #[test]
    fn help_says_what_the_admin_kubeconfig_holds_when_a_flag_replaces_the_generated_pki() {
        let help = Cli::command().render_long_help().to_string();
        for flag in [
            "--tls-cert-file",
            "--tls-private-key-file",
            "--client-ca-file",
            "--requestheader-client-ca-file",
            "--requestheader-allowed-names",
            "--requestheader-username-headers",
            "--requestheader-group-headers",
            "--requestheader-extra-headers-prefix",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
        assert!(help.contains("certificate-authority-data"), "{help}");
        assert!(
            help.contains("accepted only if this bundle trusts the generated CA"),
            "{help}"
        );
    }
}

/// Graceful shutdown on SIGTERM (and Ctrl-C), with kube-apiserver's flag names: `/readyz` fails
/// at once, new connections are still accepted for `--shutdown-delay-duration` (so load
/// balancers notice), then watches end cleanly, in-flight requests finish and the process exits
/// within `--shutdown-timeout`.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct ShutdownFlags {
    /// How long to keep accepting connections after /readyz turned unready (Go duration).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay_duration: std::time::Duration,
    /// How long in-flight requests may take to finish before the process exits anyway.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: std::time::Duration,
}

impl Default for ShutdownFlags {
    fn default() -> Self {
        ShutdownFlags {
            shutdown_delay_duration: std::time::Duration::ZERO,
            shutdown_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// A Go-style duration: numbers with units `h`, `m`, `s`, `ms` (`1h30m`, `5m`, `0`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut total = std::time::Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| format!("{text:?}: a number without a unit"))?;
        let (number, tail) = rest.split_at(digits);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{text:?}: {number:?} is not a number"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let seconds = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            other => return Err(format!("{text:?}: unknown unit {other:?} (h, m, s, ms)")),
        };
        let too_long = || format!("{text:?}: too long a duration");
        let step =
            std::time::Duration::try_from_secs_f64(value * seconds).map_err(|_| too_long())?;
        total = total.checked_add(step).ok_or_else(too_long)?;
        rest = next;
    }
    Ok(total)
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn go_durations_read_as_kube_apiservers_flags_read_them() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn a_duration_too_long_for_the_clock_is_an_error_not_a_panic() {
        // Found by the `duration_flag` fuzz target: `from_secs_f64` panicked.
        let err = parse_duration("66666666666666250h301m3").unwrap_err();
        assert!(err.contains("too long a duration"), "{err}");
        let max = format!("{}s", u64::MAX);
        assert!(parse_duration(&format!("{max}{max}")).is_err());
        assert!(parse_duration(&format!("{}s1s", u64::MAX / 2 + 1)).is_ok());
    }
}
