//! Where dynsync may send a connection's credentials: the Dataverse environments and Microsoft Entra sign-in hosts
//! of the clouds the `dataverse` crate knows (commercial, GCC, GCC High, DoD, China and the others), over HTTPS —
//! and the hosts the operator allows besides (an emulator, a proxy), in the config's `allowed_hosts`.
//!
//! A connection's URLs come from whoever holds an API token. Without this check, a token holder could make dynsync
//! sign in to a server of theirs (receiving the stored secret) or probe the services around it.

use dataverse::Region;
use std::fmt;
use std::str::FromStr;
use url::Url;

/// The hosts an operator allows beyond Microsoft's: `127.0.0.1:4000`, `localhost`, `dataverse.proxy.internal`.
/// A host without a port allows every port of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts(Vec<(String, Option<u16>)>);

impl AllowedHosts {
    /// Whether the operator allows the URL's host (and port) besides Microsoft's.
    pub fn lists(&self, url: &Url) -> bool {
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_ascii_lowercase();
        let port = url.port_or_known_default();
        self.0.iter().any(|(h, p)| *h == host && p.is_none_or(|p| Some(p) == port))
    }

    /// Checks a URL a connection would send its credentials to; `param` names where the URL came from.
    pub fn check(&self, param: &str, url: &str) -> Result<(), HostRefused> {
        let refused = |why: String| HostRefused { param: param.to_string(), url: url.to_string(), why };
        let parsed = Url::parse(url).map_err(|e| refused(format!("it is not a URL ({e})")))?;
        let host = parsed.host_str().unwrap_or_default().trim_matches(['[', ']']).to_ascii_lowercase();
        if self.lists(&parsed) {
            return Ok(());
        }
        if parsed.scheme() == "https" && parsed.port().is_none() && is_microsoft(&host) {
            return Ok(());
        }
        let why = if is_microsoft(&host) {
            "Microsoft's hosts are reached over https:// on the default port".to_string()
        } else {
            format!(
                "{host} is neither a Dataverse environment (https://<org>.crm<N>.dynamics.com, or another Microsoft \
                 cloud's) nor a Microsoft Entra sign-in host, and dynsync sends credentials only there. An operator \
                 can allow another host (an emulator, a proxy) with allowed_hosts in the config file or \
                 DYNSYNC_ALLOWED_HOSTS"
            )
        };
        Err(refused(why))
    }

    /// The hosts (and ports) of the URLs given: what a command run against a named environment allows.
    pub fn of_urls<'a>(urls: impl IntoIterator<Item = &'a str>) -> AllowedHosts {
        let hosts = urls
            .into_iter()
            .filter_map(|url| Url::parse(url).ok())
            .filter_map(|url| {
                Some((url.host_str()?.trim_matches(['[', ']']).to_ascii_lowercase(), url.port_or_known_default()))
            })
            .collect();
        AllowedHosts(hosts)
    }
}

/// A Dataverse environment's host in a known cloud, or a known cloud's sign-in host.
fn is_microsoft(host: &str) -> bool {
    Region::all().any(|region| {
        let authority = Url::parse(region.authority()).ok();
        host.strip_suffix(region.host_suffix()).is_some_and(|org| org.len() > 1 && org.ends_with('.'))
            || authority.as_ref().and_then(Url::host_str) == Some(host)
    })
}

/// A URL a connection may not send its credentials to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("auth.params.{param} ({url}) cannot be used: {why}")]
pub struct HostRefused {
    pub param: String,
    pub url: String,
    pub why: String,
}

/// An entry of `allowed_hosts` that is not a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a host to allow: give host names or addresses, with a port or without, separated by commas \
     (for example 127.0.0.1:4000,localhost)"
)]
pub struct BadAllowedHost(pub String);

impl FromStr for AllowedHosts {
    type Err = BadAllowedHost;

    /// Reads `host[:port]` entries separated by commas.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut hosts = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || BadAllowedHost(entry.to_string());
            let parsed = Url::parse(&format!("http://{entry}")).map_err(|_| bad())?;
            let host = parsed.host_str().ok_or_else(bad)?.trim_matches(['[', ']']).to_ascii_lowercase();
            let whole = parsed.path() == "/" && parsed.query().is_none() && parsed.username().is_empty();
            if !whole || entry.contains('/') || entry.contains('@') {
                return Err(bad());
            }
            hosts.push((host, parsed.port()));
        }
        Ok(AllowedHosts(hosts))
    }
}

impl fmt::Display for AllowedHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<String> = self
            .0
            .iter()
            .map(|(h, p)| match p {
                Some(p) => format!("{h}:{p}"),
                None => h.clone(),
            })
            .collect();
        f.write_str(&entries.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsofts_clouds_are_allowed_over_https_only() {
        let none = AllowedHosts::default();
        for url in [
            "https://contoso.crm4.dynamics.com",
            "https://contoso.crm.microsoftdynamics.us/",
            "https://contoso.crm.appsplatform.us",
            "https://contoso.crm.dynamics.cn",
            "https://login.microsoftonline.com",
            "https://login.microsoftonline.us/",
            "https://login.chinacloudapi.cn",
        ] {
            assert_eq!(none.check("environmentUrl", url), Ok(()), "{url}");
        }
        for url in [
            "http://contoso.crm4.dynamics.com",
            "https://contoso.crm4.dynamics.com:8443",
            "https://crm4.dynamics.com",
            "https://evil.example/contoso.crm4.dynamics.com",
            "https://contoso.crm4.dynamics.com.evil.example",
            "https://evilcrm4.dynamics.com",
            "http://127.0.0.1:4000",
            "http://169.254.169.254/latest/meta-data",
            "https://login.microsoftonline.com.evil.example",
        ] {
            let refused = none.check("authorityHost", url).unwrap_err();
            assert!(refused.to_string().starts_with("auth.params.authorityHost ("), "{refused}");
        }
    }

    #[test]
    fn an_operator_allows_hosts_with_or_without_a_port() {
        let allowed: AllowedHosts = "127.0.0.1:4000, localhost".parse().unwrap();
        assert_eq!(allowed.check("environmentUrl", "http://127.0.0.1:4000/"), Ok(()));
        assert!(allowed.check("environmentUrl", "http://127.0.0.1:4001/").is_err());
        assert_eq!(allowed.check("environmentUrl", "http://localhost:9/"), Ok(()));
        assert_eq!(allowed.to_string(), "127.0.0.1:4000,localhost");
        for bad in ["http://x", "a/b", "user@host", ":80"] {
            assert!(bad.parse::<AllowedHosts>().is_err(), "{bad}");
        }
    }
}
