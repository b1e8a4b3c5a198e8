//! What sync must know about TO before it touches it: is it live (DNS), a replica, a source others
//! copy from, ours to replace (privileges, roles, name length), and the database properties the
//! scratch copy must carry.

use crate::clients::pg;
use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::dburl::DbUrl;
use crate::engine::step::Check;
use crate::error::Result;
use crate::runbooks::backup::quote_ident;

/// `<db>__drctl_new` and `<db>__drctl_prev`: 51 + 12 bytes = PostgreSQL's 63-byte name limit.
pub const NEW_SUFFIX: &str = "__drctl_new";
pub const PREV_SUFFIX: &str = "__drctl_prev";
pub const MAX_DB_NAME: usize = 63 - PREV_SUFFIX.len();

pub fn maintenance_url(env: &EnvConfig) -> DbUrl {
    env.database_url.with_dbname(&env.maintenance_db)
}

/// `target-not-live`: refuse a TO that DNS points at: it is serving traffic (say, after a failover).
pub async fn check_not_live(cx: &Ctx, to: &EnvConfig) -> Check {
    const ID: &str = "target-not-live";
    match cx.is_live(to).await {
        Ok(None) => Check::pass(ID, "no [dns] configured: nothing points at an env"),
        Ok(Some((false, what))) => Check::pass(ID, format!("{what}, not {}", to.name)),
        Ok(Some((true, what))) => Check::fail(
            ID,
            format!(
                "{what}: {} is live, and syncing would overwrite the data it serves with {}'s",
                to.name, "the source"
            ),
        ),
        Err(e) => Check::fail(ID, format!("cannot tell whether {} is live: {e}", to.name)),
    }
}

/// `target-not-replica`: a replica is read-only and changes only by replication.
pub async fn check_not_replica(to: &EnvConfig, client: &tokio_postgres::Client) -> Check {
    const ID: &str = "target-not-replica";
    if let Some(p) = &to.replica_of {
        return Check::fail(
            ID,
            format!("{} is declared replica_of = \"{p}\": sync never writes into a replica", to.name),
        );
    }
    match client.query_one("SELECT pg_is_in_recovery()", &[]).await {
        Ok(r) if !r.get::<_, bool>(0) => Check::pass(ID, format!("{} is a primary", to.name)),
        Ok(_) => Check::fail(ID, format!("{} is in recovery (a replica): sync never writes into a replica", to.name)),
        Err(e) => Check::fail(ID, pg::describe(&e)),
    }
}

/// `target-is-source`: refuse a TO that other data comes from: an env declares it as its
/// `sync_from` or `replica_of`, or its server has streaming replicas attached. This is the
/// `sync --from staging --to prod` mix-up, which `target-not-live` misses without `[dns]`.
/// `client` is TO's connection, `None` when TO was not reached (then only the declarations count).
pub async fn check_not_source(cx: &Ctx, to: &EnvConfig, client: Option<&tokio_postgres::Client>) -> Check {
    const ID: &str = "target-is-source";
    let mut found: Vec<String> = Vec::new();
    for e in cx.config.environments.values().filter(|e| e.name != to.name) {
        for (key, source) in [("sync_from", &e.sync_from), ("replica_of", &e.replica_of)] {
            if source.as_deref() == Some(to.name.as_str()) {
                found.push(format!("{} declares {key} = \"{}\"", e.name, to.name));
            }
        }
    }
    let replicas = match client {
        None => None,
        Some(c) => match c.query("SELECT coalesce(application_name, '') FROM pg_stat_replication", &[]).await {
            Ok(rows) => Some(rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>()),
            Err(e) => return Check::fail(ID, format!("cannot read pg_stat_replication: {}", pg::describe(&e))),
        },
    };
    if let Some(r) = replicas.as_ref().filter(|r| !r.is_empty()) {
        let names: Vec<&str> = r.iter().map(|n| if n.is_empty() { "(unnamed)" } else { n.as_str() }).collect();
        found.push(format!(
            "{} {} streaming from it ({})",
            crate::output::table::count(r.len() as u64, "replica"),
            if r.len() == 1 { "is" } else { "are" },
            names.join(", ")
        ));
    }
    if !found.is_empty() {
        return Check::fail(
            ID,
            format!(
                "{} is a source: {}; syncing into it would overwrite data others copy from it (is --from/--to \
                 reversed?)",
                to.name,
                found.join("; ")
            ),
        );
    }
    match replicas {
        Some(_) => Check::pass(ID, format!("no env copies from {} and no replica streams from it", to.name)),
        None => Check::fail(ID, "target not reached: cannot tell whether replicas stream from it"),
    }
}

/// TO's database as CREATE DATABASE needs to copy it.
#[derive(Debug, Clone)]
pub struct DbProps {
    pub oid: u32,
    pub owner: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    /// `Some(icu_locale)` when the database uses the ICU provider (PostgreSQL 15+).
    pub icu: Option<String>,
}

pub async fn db_props(maint: &tokio_postgres::Client, db: &str) -> Result<Option<DbProps>, tokio_postgres::Error> {
    let major = maint.query_one("SHOW server_version_num", &[]).await?.get::<_, String>(0);
    let icu_cols = if major.trim().parse::<u32>().unwrap_or(0) >= 150000 {
        "CASE WHEN datlocprovider = 'i' THEN daticulocale END"
    } else {
        "NULL::text"
    };
    let q = format!(
        "SELECT oid::oid, pg_get_userbyid(datdba)::text, pg_encoding_to_char(encoding)::text, datcollate::text, \
         datctype::text, {icu_cols} FROM pg_database WHERE datname = $1"
    );
    Ok(maint.query_opt(&q, &[&db]).await?.map(|r| DbProps {
        oid: r.get(0),
        owner: r.get(1),
        encoding: r.get(2),
        collate: r.get(3),
        ctype: r.get(4),
        icu: r.get(5),
    }))
}

pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// SQL that creates `scratch` with TO's owner, encoding and locale, from template0 (template1 may
/// carry objects of its own that would collide with the dump's).
pub fn create_sql(scratch: &str, p: &DbProps) -> String {
    let mut sql = format!(
        "CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
        quote_ident(scratch),
        quote_ident(&p.owner),
        quote_literal(&p.encoding),
        quote_literal(&p.collate),
        quote_literal(&p.ctype)
    );
    if let Some(icu) = &p.icu {
        sql.push_str(&format!(" LOCALE_PROVIDER icu ICU_LOCALE {}", quote_literal(icu)));
    }
    sql
}

/// List-valued settings whose stored text is already SQL list syntax (`"$user", public`): they are
/// set verbatim, as pg_dumpall does, where quoting the whole would make it one element.
const LIST_SETTINGS: &[&str] = &[
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "local_preload_libraries",
    "shared_preload_libraries",
];

/// Statements that give `scratch` TO's database-level settings (`ALTER DATABASE … SET`, and
/// `ALTER ROLE … IN DATABASE … SET`) and its grants (datacl).
pub async fn settings_and_grants_sql(
    maint: &tokio_postgres::Client,
    p: &DbProps,
    scratch: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let db = quote_ident(scratch);
    let mut out = Vec::new();
    let rows = maint
        .query(
            "SELECT r.rolname::text, unnest(s.setconfig) FROM pg_db_role_setting s \
             LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE s.setdatabase = $1 ORDER BY 1 NULLS FIRST, 2",
            &[&p.oid],
        )
        .await?;
    for r in rows {
        let role: Option<String> = r.get(0);
        let setting: String = r.get(1);
        let Some((name, value)) = setting.split_once('=') else { continue };
        let value = if LIST_SETTINGS.contains(&name) { value.to_string() } else { quote_literal(value) };
        out.push(match role {
            None => format!("ALTER DATABASE {db} SET {} = {value}", quote_ident(name)),
            Some(role) => {
                format!("ALTER ROLE {} IN DATABASE {db} SET {} = {value}", quote_ident(&role), quote_ident(name))
            }
        });
    }
    let acl = maint.query_one("SELECT datacl IS NULL FROM pg_database WHERE oid = $1", &[&p.oid]).await?;
    if !acl.get::<_, bool>(0) {
        // An explicit ACL replaces the defaults (PUBLIC may CONNECT and TEMP): start from none.
        out.push(format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"));
        let grants = maint
            .query(
                "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee)::text END, a.privilege_type, \
                 a.is_grantable FROM pg_database d, aclexplode(d.datacl) a WHERE d.oid = $1 ORDER BY 1 NULLS FIRST, 2",
                &[&p.oid],
            )
            .await?;
        for g in grants {
            let who: Option<String> = g.get(0);
            let privilege: String = g.get(1);
            let grantable: bool = g.get(2);
            out.push(format!(
                "GRANT {privilege} ON DATABASE {db} TO {}{}",
                who.as_deref().map(quote_ident).unwrap_or_else(|| "PUBLIC".into()),
                if grantable { " WITH GRANT OPTION" } else { "" }
            ));
        }
    }
    Ok(out)
}

/// `target-privileges`: what creating, renaming and dropping databases and ending sessions need.
pub async fn check_privileges(maint: &tokio_postgres::Client, p: &DbProps) -> Check {
    const ID: &str = "target-privileges";
    let r = maint
        .query_one(
            "SELECT current_user::text, rolsuper, rolcreatedb, pg_has_role(current_user, $1::text, 'MEMBER'), \
             pg_has_role(current_user, 'pg_signal_backend', 'MEMBER') FROM pg_roles WHERE rolname = current_user",
            &[&p.owner],
        )
        .await;
    match r {
        Err(e) => Check::fail(ID, pg::describe(&e)),
        Ok(r) => {
            let (user, sup, createdb, owner, signal): (String, bool, bool, bool, bool) =
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
            if sup {
                return Check::pass(ID, format!("{user} is a superuser"));
            }
            let mut missing = Vec::new();
            if !createdb {
                missing.push("CREATEDB".to_string());
            }
            if !owner {
                missing.push(format!("membership in the database owner {}", p.owner));
            }
            if !signal {
                missing.push("pg_signal_backend (to end sessions before the swap)".to_string());
            }
            if missing.is_empty() {
                Check::pass(ID, format!("{user} has CREATEDB, owns the database and may end sessions"))
            } else {
                Check::fail(ID, format!("{user} lacks {}", missing.join(", ")))
            }
        }
    }
}

/// Roles that own objects in the source database or are granted privileges on them: the dump's
/// ALTER … OWNER and GRANT statements name them, and pg_restore fails if one is missing.
pub async fn dump_roles(from: &tokio_postgres::Client) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = from
        .query(
            "WITH n AS (SELECT oid, nspowner, nspacl FROM pg_namespace \
                        WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg_toast%' \
                        AND nspname NOT LIKE 'pg_temp%'), \
             ids AS (SELECT nspowner AS id FROM n \
                     UNION SELECT (aclexplode(nspacl)).grantee FROM n \
                     UNION SELECT relowner FROM pg_class WHERE relnamespace IN (SELECT oid FROM n) \
                     UNION SELECT (aclexplode(relacl)).grantee FROM pg_class WHERE relnamespace IN (SELECT oid FROM n) \
                     UNION SELECT proowner FROM pg_proc WHERE pronamespace IN (SELECT oid FROM n) \
                     UNION SELECT typowner FROM pg_type WHERE typnamespace IN (SELECT oid FROM n)) \
             SELECT r.rolname::text FROM ids JOIN pg_roles r ON r.oid = ids.id \
             WHERE r.rolname <> 'pg_database_owner' ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn missing_roles(
    to: &tokio_postgres::Client,
    roles: &[String],
) -> Result<Vec<String>, tokio_postgres::Error> {
    let present: Vec<String> = to
        .query("SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)", &[&roles])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(roles.iter().filter(|r| !present.contains(r)).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scratch_database_copies_owner_encoding_and_locale() {
        let p = DbProps {
            oid: 1,
            owner: "app".into(),
            encoding: "UTF8".into(),
            collate: "en_US.UTF-8".into(),
            ctype: "C".into(),
            icu: None,
        };
        assert_eq!(
            create_sql("app__drctl_new", &p),
            "CREATE DATABASE \"app__drctl_new\" OWNER \"app\" TEMPLATE template0 ENCODING 'UTF8' \
             LC_COLLATE 'en_US.UTF-8' LC_CTYPE 'C'"
        );
        assert_eq!(MAX_DB_NAME, 51);
    }
}
