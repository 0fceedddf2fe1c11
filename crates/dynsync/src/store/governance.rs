//! Each sandbox's governance document (labels and policies), kept whole: it is read to check every flow saved or
//! enabled, and replaced whole, guarded by its etag.

use super::{Result, Store, StoreError};
use crate::governance::Governance;
use crate::ids::{Etag, Sandbox};
use chrono::Utc;

#[derive(sqlx::FromRow)]
struct GovernanceRow {
    document: String,
    etag: String,
}

impl Store {
    /// A sandbox's governance and its etag; an empty document (no label, no policy) when none was saved.
    pub async fn governance(&self, sandbox: &Sandbox) -> Result<(Governance, Option<Etag>)> {
        let rows: Vec<GovernanceRow> = self
            .engine
            .fetch_as("SELECT document, etag FROM governance WHERE sandbox = $1", &[sandbox.as_str().into()])
            .await?;
        match rows.into_iter().next() {
            None => Ok((Governance::default(), None)),
            Some(row) => {
                let document = serde_json::from_str(&row.document).map_err(|e| StoreError::Corrupt {
                    what: "governance",
                    detail: format!("sandbox {sandbox}: {e}"),
                })?;
                Ok((document, Some(Etag(row.etag))))
            }
        }
    }

    /// Replaces a sandbox's governance; `expected` is the etag it was read with (`None`: there was none).
    /// [`StoreError::Stale`] when it changed meanwhile.
    pub async fn put_governance(
        &self,
        sandbox: &Sandbox,
        governance: &Governance,
        expected: Option<&Etag>,
        etag: &Etag,
    ) -> Result<()> {
        let document = serde_json::to_string(governance).expect("governance serializes");
        let now = Utc::now().to_rfc3339();
        let changed = match expected {
            Some(expected) => self
                .engine
                .execute(
                    "UPDATE governance SET document = $2, etag = $3, updated_at = $4 WHERE sandbox = $1 AND etag = $5",
                    &[
                        sandbox.as_str().into(),
                        document.into(),
                        etag.0.as_str().into(),
                        now.into(),
                        expected.0.as_str().into(),
                    ],
                )
                .await?,
            None => {
                self.engine
                    .execute(
                        "INSERT INTO governance (sandbox, document, etag, updated_at) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (sandbox) DO NOTHING",
                        &[sandbox.as_str().into(), document.into(), etag.0.as_str().into(), now.into()],
                    )
                    .await?
            }
        };
        if changed == 0 {
            return Err(StoreError::Stale(expected.cloned().unwrap_or_else(|| Etag("none".into()))));
        }
        Ok(())
    }
}
