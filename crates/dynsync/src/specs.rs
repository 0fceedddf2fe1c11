//! Connection specs: the systems dynsync connects to and how each signs in, in Flow Service's shape. The Dynamics
//! source spec keeps Adobe's id and auth spec names, so that requests written for Adobe's API work unchanged.

use crate::ids::ConnectionSpecId;
use serde_json::{Value as Json, json};
use uuid::{Uuid, uuid};

/// Adobe's Microsoft Dynamics source (seed 003): read tables from Dynamics.
pub const DYNAMICS_SOURCE: ConnectionSpecId = ConnectionSpecId(uuid!("38ad80fe-8b06-4938-94f4-d4ee80266b07"));
/// dynsync's Microsoft Dynamics 365 destination (seed 002): write audiences and attributes onto contacts.
pub const DYNAMICS_DESTINATION: ConnectionSpecId = ConnectionSpecId(uuid!("5b1e4f7a-9c3d-4e2b-8a6f-d3650c0de001"));

/// Adobe's data lake (seed 003's target): here, a dataset an ingestion writes — Parquet files or a PostgreSQL table.
pub const DATA_LAKE: ConnectionSpecId = ConnectionSpecId(uuid!("c604ff05-7f1a-43c0-8e18-33bf874cb11c"));

/// Adobe's `CRMToAEP` flow spec (seed 003): a Dynamics table loaded into a dataset, fully then incrementally.
pub const INGESTION_FLOW_SPEC: Uuid = uuid!("14518937-270c-4525-bdec-c2ba7cce3860");

/// dynsync's lead intake flows (seed 004): marketplace leads posted over HTTPS become Dynamics leads.
pub const LEAD_INTAKE_FLOW_SPEC: Uuid = uuid!("7c0e5a2d-4b1f-4e8a-9d36-1ead5000a004");

/// dynsync's email events flows (seed 001): events posted by an email service go on the Dynamics timeline.
pub const ENGAGEMENT_EVENTS_FLOW_SPEC: Uuid = uuid!("3e9b27c4-6a15-4f0d-b8e2-e46a6e000b01");

pub const BASIC_AUTH: &str = "Basic Authentication for Dynamics-Online";
pub const SERVICE_PRINCIPAL_AUTH: &str = "Service Principal Key Based Authentication";
pub const CLIENT_CREDENTIALS_AUTH: &str = "Dynamics 365 Client Credentials";

/// A parameter of an auth spec.
#[derive(Debug, Clone, Copy)]
pub struct AuthParam {
    pub name: &'static str,
    pub description: &'static str,
    pub required: bool,
    /// Encrypted at rest and never returned.
    pub secret: bool,
}

const fn param(name: &'static str, description: &'static str, required: bool, secret: bool) -> AuthParam {
    AuthParam { name, description, required, secret }
}

const SERVICE_URI: AuthParam =
    param("serviceUri", "The environment URL, for example https://contoso.crm4.dynamics.com.", true, false);
const AUTHORITY_HOST: AuthParam = param(
    "authorityHost",
    "The sign-in authority; found from the environment when left out (https://login.microsoftonline.com for most clouds, the emulator's URL for the emulator).",
    false,
    false,
);

/// The auth specs, by connection spec.
pub fn auth_params(spec: ConnectionSpecId, auth_spec: &str) -> Option<&'static [AuthParam]> {
    const BASIC: &[AuthParam] = &[
        SERVICE_URI,
        param("username", "The user name of the Dynamics account (user@contoso.com).", true, false),
        param("password", "The password of the Dynamics account.", true, true),
        param("clientId", "The public client app to sign in with; Microsoft's sample app when left out.", false, false),
        AUTHORITY_HOST,
    ];
    const SERVICE_PRINCIPAL: &[AuthParam] = &[
        SERVICE_URI,
        param("servicePrincipalId", "The application (client) id of the app registration.", true, false),
        param("servicePrincipalKey", "A client secret of the app registration (its value, not its id).", true, true),
        param("tenantId", "The directory (tenant) id; found from the environment when left out.", false, false),
        AUTHORITY_HOST,
    ];
    const CLIENT_CREDENTIALS: &[AuthParam] = &[
        param("clientId", "The application (client) id of the Entra ID app registration.", true, false),
        param("clientSecret", "A client secret of the app registration (its value, not its id).", true, true),
        param("tenantId", "The directory (tenant) id of the app registration.", true, false),
        param(
            "region",
            "The region host label of the environment (crm for North America, crm3 for Canada, crm4 for Europe…) or its code (NAM, CAN, EUR…); needed when environmentUrl is only the organization name.",
            false,
            false,
        ),
        param(
            "environmentUrl",
            "The environment: its full URL (https://org57771b33.crm.dynamics.com), or only the organization name (org57771b33) with region.",
            true,
            false,
        ),
        AUTHORITY_HOST,
    ];
    match (spec, auth_spec) {
        (DYNAMICS_SOURCE, BASIC_AUTH) => Some(BASIC),
        (DYNAMICS_SOURCE, SERVICE_PRINCIPAL_AUTH) => Some(SERVICE_PRINCIPAL),
        (DYNAMICS_DESTINATION, CLIENT_CREDENTIALS_AUTH) => Some(CLIENT_CREDENTIALS),
        (DYNAMICS_DESTINATION, BASIC_AUTH) => Some(BASIC),
        _ => None,
    }
}

/// The auth spec names of a connection spec.
pub fn auth_spec_names(spec: ConnectionSpecId) -> &'static [&'static str] {
    match spec {
        DYNAMICS_SOURCE => &[BASIC_AUTH, SERVICE_PRINCIPAL_AUTH],
        DYNAMICS_DESTINATION => &[CLIENT_CREDENTIALS_AUTH, BASIC_AUTH],
        _ => &[],
    }
}

pub fn is_known(spec: ConnectionSpecId) -> bool {
    !auth_spec_names(spec).is_empty()
}

fn auth_spec_json(spec: ConnectionSpecId, name: &str, kind: &str, settings: Json) -> Json {
    let params = auth_params(spec, name).expect("listed auth spec");
    let mut properties = serde_json::Map::new();
    for p in params {
        let mut property = json!({"type": "string", "description": p.description});
        if p.secret {
            property["format"] = json!("password");
        }
        properties.insert(p.name.to_string(), property);
    }
    if name == CLIENT_CREDENTIALS_AUTH {
        properties.insert(
            crate::connection::ADDITIONAL_REGISTRATIONS.to_string(),
            json!({
                "type": "array",
                "description": "Other app registrations of the same tenant, each an application user of the environment: \
                                the connection spreads its requests over them, each with its own budget under the limits.",
                "maxItems": crate::connection::MAX_ADDITIONAL_REGISTRATIONS,
                "items": {
                    "type": "object",
                    "properties": {
                        "clientId": {"type": "string", "format": "uuid"},
                        "clientSecret": {"type": "string", "format": "password"},
                    },
                    "required": ["clientId", "clientSecret"],
                },
            }),
        );
    }
    let required: Vec<&str> = params.iter().filter(|p| p.required).map(|p| p.name).collect();
    json!({
        "name": name,
        "type": kind,
        "spec": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": properties,
            "required": required,
        },
        "settings": settings,
    })
}

/// Every connection spec, as `GET /connectionSpecs` lists them.
pub fn all() -> Vec<Json> {
    vec![
        json!({
            "id": DYNAMICS_SOURCE,
            "name": "dynamics-online",
            "providerId": Uuid::nil(),
            "version": "1.0",
            "description": "Microsoft Dynamics 365 (Dataverse) as a source: explore and read its tables.",
            "attributes": {"category": "CRM", "isSource": true},
            "authSpec": [
                auth_spec_json(DYNAMICS_SOURCE, BASIC_AUTH, "Basic Authentication",
                    json!({"authenticationType": "Office365", "deploymentType": "Online"})),
                auth_spec_json(DYNAMICS_SOURCE, SERVICE_PRINCIPAL_AUTH, "Service Principal Key Based Authentication",
                    json!({"authenticationType": "ServicePrincipal", "deploymentType": "Online"})),
            ],
        }),
        json!({
            "id": DYNAMICS_DESTINATION,
            "name": "microsoft-dynamics-365",
            "providerId": Uuid::nil(),
            "version": "1.0",
            "description": "Microsoft Dynamics 365 (Dataverse) as a destination: audience statuses and profile attributes onto existing contacts.",
            "attributes": {"category": "CRM", "isDestination": true},
            "authSpec": [
                auth_spec_json(DYNAMICS_DESTINATION, CLIENT_CREDENTIALS_AUTH, "OAuth2 Client Credential", json!({})),
            ],
            "targetSpec": {
                "name": "Dynamics 365 destination details",
                "spec": {
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "type": "object",
                    "properties": {
                        "customizationPrefix": {
                            "type": "string",
                            "description": "The customization prefix of the publisher of the custom columns that hold audience statuses (new for the default solution, cr8a3 for a CDS default publisher…)."
                        }
                    },
                    "required": ["customizationPrefix"]
                }
            }
        }),
    ]
}
