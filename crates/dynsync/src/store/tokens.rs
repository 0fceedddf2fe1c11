//! The API tokens made through the API: each with its roles and sandboxes. A token itself is never stored, only
//! its SHA-256 digest, so it cannot be read back from the database; a revoked token stays listed, refused.

use super::{Result, Store, StoreError, timestamp};
use crate::access::{Role, Sandboxes};
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;
use uuid::Uuid;

/// A token as listed: never the token itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiToken {
    pub id: Uuid,
    pub name: String,
    pub roles: BTreeSet<Role>,
    pub sandboxes: Sandboxes,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: String,
    name: String,
    roles: String,
    sandboxes: String,
    created_at: String,
    revoked_at: String,
}

impl TryFrom<TokenRow> for ApiToken {
    type Error = StoreError;
    fn try_from(row: TokenRow) -> Result<ApiToken> {
        let corrupt = |detail: String| StoreError::Corrupt { what: "API token", detail };
        Ok(ApiToken {
            id: row.id.parse().map_err(|e| corrupt(format!("id {}: {e}", row.id)))?,
            roles: serde_json::from_str(&row.roles).map_err(|e| corrupt(format!("roles of {}: {e}", row.id)))?,
            sandboxes: serde_json::from_str(&row.sandboxes)
                .map_err(|e| corrupt(format!("sandboxes of {}: {e}", row.id)))?,
            created_at: timestamp(&row.created_at).map_err(corrupt)?,
            revoked_at: match row.revoked_at.as_str() {
                "" => None,
                at => Some(timestamp(at).map_err(corrupt)?),
            },
            name: row.name,
        })
    }
}

impl Store {
    /// Keeps a new token by its digest.
    pub async fn insert_api_token(&self, token: &ApiToken, digest: &str) -> Result<()> {
        self.engine
            .execute(
                "INSERT INTO api_tokens (id, name, digest, roles, sandboxes, created_at, revoked_at)
                 VALUES ($1, $2, $3, $4, $5, $6, '')",
                &[
                    token.id.to_string().into(),
                    token.name.as_str().into(),
                    digest.into(),
                    serde_json::to_string(&token.roles).expect("roles serialize").into(),
                    serde_json::to_string(&token.sandboxes).expect("sandboxes serialize").into(),
                    token.created_at.to_rfc3339().into(),
                ],
            )
            .await?;
        Ok(())
    }

    /// The token whose digest this is, unless it was revoked.
    pub async fn api_token_by_digest(&self, digest: &str) -> Result<Option<ApiToken>> {
        let rows: Vec<TokenRow> = self
            .engine
            .fetch_as(
                "SELECT id, name, roles, sandboxes, created_at, revoked_at FROM api_tokens
                 WHERE digest = $1 AND revoked_at = ''",
                &[digest.into()],
            )
            .await?;
        rows.into_iter().next().map(ApiToken::try_from).transpose()
    }

    /// Every token, revoked ones too, oldest first.
    pub async fn api_tokens(&self) -> Result<Vec<ApiToken>> {
        let rows: Vec<TokenRow> = self
            .engine
            .fetch_as(
                "SELECT id, name, roles, sandboxes, created_at, revoked_at FROM api_tokens ORDER BY created_at, id",
                &[],
            )
            .await?;
        rows.into_iter().map(ApiToken::try_from).collect()
    }

    /// Revokes a token; whether it existed and was not revoked yet.
    pub async fn revoke_api_token(&self, id: Uuid) -> Result<bool> {
        let changed = self
            .engine
            .execute(
                "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at = ''",
                &[id.to_string().into(), Utc::now().to_rfc3339().into()],
            )
            .await?;
        Ok(changed > 0)
    }
}
