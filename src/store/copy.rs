//! `signet store copy`: every row of every table from one store to another (SQLite to
//! PostgreSQL is the usual case), parents before children, in the same columns both schemas
//! share. Rows the target already has (same key, or same username) are kept as they are, so a
//! second run copies nothing: the copy is idempotent.

use super::StoreError;
use async_trait::async_trait;

/// A column's type in both schemas.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Text,
    Int,
    Bytes,
}

/// One value of a row, `None` for SQL NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Text(Option<String>),
    Int(Option<i64>),
    Bytes(Option<Vec<u8>>),
}

/// A table as `store copy` reads and writes it.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Kind)],
    /// Rows are read in this order (and so written in it).
    pub order: &'static str,
}

use Kind::{Bytes, Int, Text};

/// Every table, parents before the tables that refer to them.
pub const TABLES: [Table; 8] = [
    Table {
        name: "users",
        columns: &[
            ("id", Text),
            ("username", Text),
            ("password_hash", Text),
            ("roles", Text),
            ("created_at", Int),
        ],
        order: "created_at, id",
    },
    Table {
        name: "devices",
        columns: &[
            ("id", Text),
            ("owner_id", Text),
            ("name", Text),
            ("key_hash", Bytes),
            ("created_at", Int),
            ("key_rotated_at", Int),
            ("last_token_at", Int),
        ],
        order: "created_at, id",
    },
    Table {
        name: "sessions",
        columns: &[
            ("id", Text),
            ("user_id", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("revoked_at", Int),
            ("revoked_reason", Text),
        ],
        order: "created_at, id",
    },
    Table {
        name: "refresh_tokens",
        columns: &[
            ("token_hash", Bytes),
            ("session_id", Text),
            ("issued_at", Int),
            ("used_at", Int),
        ],
        order: "issued_at, token_hash",
    },
    Table {
        name: "denied_tokens",
        columns: &[("jti", Text), ("expires_at", Int)],
        order: "jti",
    },
    Table {
        name: "revoked_sessions",
        columns: &[("sid", Text), ("forget_after", Int)],
        order: "sid",
    },
    Table {
        name: "subject_cutoffs",
        columns: &[("sub", Text), ("not_before", Int), ("forget_after", Int)],
        order: "sub",
    },
    Table {
        name: "api_keys",
        columns: &[
            ("id", Text),
            ("name", Text),
            ("secret_hash", Bytes),
            ("scopes", Text),
            ("created_at", Int),
            ("revoked_at", Int),
        ],
        order: "created_at, id",
    },
];

impl Table {
    pub(super) fn select_sql(&self) -> String {
        let columns: Vec<&str> = self.columns.iter().map(|(name, _)| *name).collect();
        format!(
            "SELECT {} FROM {} ORDER BY {}",
            columns.join(", "),
            self.name,
            self.order
        )
    }

    pub(super) fn insert_sql(&self) -> String {
        let columns: Vec<&str> = self.columns.iter().map(|(name, _)| *name).collect();
        let params: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
        format!(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING",
            self.name,
            columns.join(", "),
            params.join(", ")
        )
    }
}

/// Raw table access for `store copy`; both backends implement it (`sql_store!`).
#[async_trait]
pub trait TableCopy: Send + Sync {
    async fn count_rows(&self, table: &Table) -> Result<u64, StoreError>;
    async fn read_rows(&self, table: &Table) -> Result<Vec<Vec<Cell>>, StoreError>;
    /// Inserts `rows` in one transaction, keeping rows already there; returns how many were new.
    async fn write_rows(&self, table: &Table, rows: &[Vec<Cell>]) -> Result<u64, StoreError>;
}

/// What copying one table did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub table: &'static str,
    pub read: u64,
    pub written: u64,
}

/// Copies every table of `from` into `to`. Refuses a target holding any row unless `merge`,
/// and, before any row is written, a target that holds a user of the source's usernames under
/// another id (an `admin` created by a server's first start on the target, say): keeping
/// either one would leave the other's devices and sessions pointing at no user. `progress` is
/// told about each table as it is done.
pub async fn copy_tables(
    from: &dyn TableCopy,
    to: &dyn TableCopy,
    merge: bool,
    mut progress: impl FnMut(&Copied),
) -> Result<Vec<Copied>, StoreError> {
    if !merge {
        let mut held = Vec::new();
        for table in &TABLES {
            let count = to.count_rows(table).await?;
            if count > 0 {
                held.push(format!("{}: {count}", table.name));
            }
        }
        if !held.is_empty() {
            return Err(StoreError::Config(format!(
                "the target store is not empty ({}); pass --force to copy into it anyway \
                 (rows it already has are kept)",
                held.join(", ")
            )));
        }
    }
    let conflicts = username_conflicts(from, to).await?;
    if !conflicts.is_empty() {
        return Err(StoreError::Config(format!(
            "the target store has its own user {} (same username, another id): nothing was \
             copied. Remove {} from the target (`signet user remove NAME` with the target's \
             configuration) and copy again; the source's user then takes its place",
            conflicts.join(", "),
            if conflicts.len() == 1 { "it" } else { "them" },
        )));
    }
    let mut done = Vec::new();
    for table in &TABLES {
        let rows = from.read_rows(table).await?;
        let written = to.write_rows(table, &rows).await?;
        let copied = Copied {
            table: table.name,
            read: rows.len() as u64,
            written,
        };
        progress(&copied);
        done.push(copied);
    }
    Ok(done)
}

/// The usernames that `from` and `to` both hold, each under its own id, sorted.
async fn username_conflicts(
    from: &dyn TableCopy,
    to: &dyn TableCopy,
) -> Result<Vec<String>, StoreError> {
    let users = &TABLES[0];
    let ids_by_name = |rows: Vec<Vec<Cell>>| {
        rows.into_iter()
            .filter_map(|row| match (row.first(), row.get(1)) {
                (Some(Cell::Text(Some(id))), Some(Cell::Text(Some(name)))) => {
                    Some((name.to_lowercase(), id.clone()))
                }
                _ => None,
            })
            .collect::<std::collections::HashMap<_, _>>()
    };
    let target = ids_by_name(to.read_rows(users).await?);
    if target.is_empty() {
        return Ok(Vec::new());
    }
    let mut conflicts: Vec<String> = ids_by_name(from.read_rows(users).await?)
        .into_iter()
        .filter(|(name, id)| target.get(name).is_some_and(|theirs| theirs != id))
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    conflicts.sort();
    Ok(conflicts)
}
