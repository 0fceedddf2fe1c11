//! Where a Dataverse environment lives: from an organization name and a region, or from a full URL.

use std::fmt;
use std::str::FromStr;
use url::Url;

/// A datacenter region and the host suffix its environments live under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    NorthAmerica,
    SouthAmerica,
    Canada,
    Europe,
    AsiaPacific,
    Oceania,
    Japan,
    India,
    UsGovernment,
    UsGovernmentHigh,
    UsDefense,
    UnitedKingdom,
    France,
    SouthAfrica,
    UnitedArabEmirates,
    Germany,
    Switzerland,
    Norway,
    Singapore,
    Korea,
    Sweden,
    China,
    GermanyLegacy,
}

/// Region codes as Power Platform admins write them, with the host suffix of each.
const REGIONS: &[(Region, &str, &str)] = &[
    (Region::NorthAmerica, "NAM", "crm.dynamics.com"),
    (Region::SouthAmerica, "SAM", "crm2.dynamics.com"),
    (Region::Canada, "CAN", "crm3.dynamics.com"),
    (Region::Europe, "EUR", "crm4.dynamics.com"),
    (Region::AsiaPacific, "APJ", "crm5.dynamics.com"),
    (Region::Oceania, "OCE", "crm6.dynamics.com"),
    (Region::Japan, "JPN", "crm7.dynamics.com"),
    (Region::India, "IND", "crm8.dynamics.com"),
    (Region::UsGovernment, "GCC", "crm9.dynamics.com"),
    (Region::UsGovernmentHigh, "GCCHIGH", "crm.microsoftdynamics.us"),
    (Region::UsDefense, "DOD", "crm.appsplatform.us"),
    (Region::UnitedKingdom, "GBR", "crm11.dynamics.com"),
    (Region::France, "FRA", "crm12.dynamics.com"),
    (Region::SouthAfrica, "ZAF", "crm14.dynamics.com"),
    (Region::UnitedArabEmirates, "UAE", "crm15.dynamics.com"),
    (Region::Germany, "GER", "crm16.dynamics.com"),
    (Region::Switzerland, "CHE", "crm17.dynamics.com"),
    (Region::Norway, "NOR", "crm19.dynamics.com"),
    (Region::Singapore, "SGP", "crm20.dynamics.com"),
    (Region::Korea, "KOR", "crm21.dynamics.com"),
    (Region::Sweden, "SWE", "crm22.dynamics.com"),
    (Region::China, "CHN", "crm.dynamics.cn"),
    (Region::GermanyLegacy, "DEU", "crm.microsoftdynamics.de"),
];

impl Region {
    /// Every region the client knows, in every Microsoft cloud (commercial, US government, China, …).
    pub fn all() -> impl Iterator<Item = Region> {
        REGIONS.iter().map(|(r, _, _)| *r)
    }

    pub fn host_suffix(self) -> &'static str {
        REGIONS.iter().find(|(r, _, _)| *r == self).map(|(_, _, h)| *h).expect("every region is listed")
    }

    pub fn code(self) -> &'static str {
        REGIONS.iter().find(|(r, _, _)| *r == self).map(|(_, c, _)| *c).expect("every region is listed")
    }

    /// The sign-in authority of the cloud the region belongs to.
    pub fn authority(self) -> &'static str {
        match self {
            Region::UsGovernmentHigh | Region::UsDefense => "https://login.microsoftonline.us",
            Region::China => "https://login.chinacloudapi.cn",
            _ => "https://login.microsoftonline.com",
        }
    }
}

impl FromStr for Region {
    type Err = EnvironmentError;

    /// Takes a region code (`EUR`), or the host label of the region (`crm4`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim().to_ascii_uppercase();
        REGIONS
            .iter()
            .find(|(_, code, host)| {
                *code == wanted || host.split('.').next().is_some_and(|label| label.eq_ignore_ascii_case(text.trim()))
            })
            .map(|(r, _, _)| *r)
            .ok_or_else(|| EnvironmentError::UnknownRegion(text.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvironmentError {
    #[error(
        "'{0}' is not a Dataverse region: use a region code such as NAM, EUR, GBR, FRA, CAN, APJ, JPN, GCC, or the host label such as crm4"
    )]
    UnknownRegion(String),
    #[error(
        "'{0}' is not an environment URL: give it as https://<org>.crm<N>.dynamics.com (or http:// for a local emulator)"
    )]
    BadUrl(String),
    #[error("'{0}' is not an organization name: use the letters, digits and '-' of the environment's URL")]
    BadOrganization(String),
}

/// A Dataverse environment: its URL (the OAuth resource) and its Web API root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    url: Url,
}

impl Environment {
    /// `https://<org>.<region host>`, for example `contoso` in `EUR` is `https://contoso.crm4.dynamics.com`.
    pub fn from_organization(organization: &str, region: Region) -> Result<Self, EnvironmentError> {
        let valid = !organization.is_empty() && organization.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid {
            return Err(EnvironmentError::BadOrganization(organization.to_string()));
        }
        Self::from_url(&format!("https://{}.{}", organization.to_ascii_lowercase(), region.host_suffix()))
    }

    /// A full environment URL; a trailing `/api/data/v9.x/` is accepted and dropped.
    pub fn from_url(text: &str) -> Result<Self, EnvironmentError> {
        let bad = || EnvironmentError::BadUrl(text.to_string());
        let mut url = Url::parse(text.trim()).map_err(|_| bad())?;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() || url.query().is_some() {
            return Err(bad());
        }
        if let Some(at) = url.path().find("/api/data") {
            let path = url.path()[..at].to_string();
            url.set_path(&path);
        }
        if url.path() != "/" && !url.path().is_empty() {
            return Err(bad());
        }
        url.set_path("");
        Ok(Environment { url })
    }

    /// The region of a `*.crmN.dynamics.com`-style host, if it is one.
    pub fn region(&self) -> Option<Region> {
        let host = self.url.host_str()?;
        REGIONS.iter().find(|(_, _, suffix)| host.ends_with(&format!(".{suffix}"))).map(|(r, _, _)| *r)
    }

    /// The environment URL without a trailing slash: the resource tokens are asked for.
    pub fn url(&self) -> String {
        self.url.as_str().trim_end_matches('/').to_string()
    }

    /// The scope a confidential client asks for.
    pub fn default_scope(&self) -> String {
        format!("{}/.default", self.url())
    }

    /// The Web API root, `…/api/data/v9.2/`.
    pub fn web_api(&self) -> String {
        format!("{}/api/data/v9.2/", self.url())
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_urls_from_organization_and_region() {
        let env = Environment::from_organization("Contoso", Region::Europe).unwrap();
        assert_eq!(env.url(), "https://contoso.crm4.dynamics.com");
        assert_eq!(env.web_api(), "https://contoso.crm4.dynamics.com/api/data/v9.2/");
        assert_eq!(env.default_scope(), "https://contoso.crm4.dynamics.com/.default");
        assert_eq!(env.region(), Some(Region::Europe));
        assert_eq!("crm11".parse::<Region>().unwrap(), Region::UnitedKingdom);
        assert_eq!("gcchigh".parse::<Region>().unwrap().authority(), "https://login.microsoftonline.us");
        assert_eq!(Environment::from_organization("org", Region::China).unwrap().url(), "https://org.crm.dynamics.cn");
    }

    #[test]
    fn accepts_full_urls_including_the_emulator() {
        assert_eq!(
            Environment::from_url("https://contoso.crm.dynamics.com/api/data/v9.2/").unwrap().url(),
            "https://contoso.crm.dynamics.com"
        );
        assert_eq!(
            Environment::from_url("http://127.0.0.1:8080").unwrap().web_api(),
            "http://127.0.0.1:8080/api/data/v9.2/"
        );
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        assert!(matches!("crm99".parse::<Region>(), Err(EnvironmentError::UnknownRegion(_))));
        assert!(Environment::from_url("contoso.crm.dynamics.com").is_err());
        assert!(Environment::from_url("ftp://contoso.crm.dynamics.com").is_err());
        assert!(Environment::from_url("https://contoso.crm.dynamics.com/main.aspx").is_err());
        let err = Environment::from_organization("contoso.crm", Region::NorthAmerica).unwrap_err();
        assert!(err.to_string().contains("not an organization name"));
    }
}
