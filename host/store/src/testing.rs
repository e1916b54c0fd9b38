//! Runs a store test on every engine, from one source: [`every_engine!`] turns one test body
//! into a module with a `sqlite` test (a fresh database in a temporary data dir) and a
//! `postgres` test (a fresh database on the test cluster, see [`crate::test_support`]; skipped
//! without one outside CI). A test written once cannot pass on one engine and be forgotten on
//! the other.

use crate::Store;
use crate::config::StorageConfig;

/// A store on SQLite in a fresh temporary data dir (kept until the returned guard drops).
pub(crate) async fn sqlite() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = Store::open(tmp.path(), &StorageConfig::default())
        .await
        .expect("open a SQLite store");
    (tmp, s)
}

/// A store on a fresh PostgreSQL database of the test cluster, or `None` (skipped) without one.
pub(crate) async fn postgres() -> Option<(tempfile::TempDir, Store)> {
    let cfg = crate::test_support::postgres_storage().await?;
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = Store::open(tmp.path(), &cfg)
        .await
        .expect("open a PostgreSQL store");
    Some((tmp, s))
}

/// Records a high-risk `shell` terminal `id` (state `starting`, no holder behind it) whose
/// recipe plugin is `plugin`.
pub(crate) async fn new_pty(s: &Store, id: &str, plugin: Option<&str>) {
    use happyx_core::vocab::Risk;
    s.create_pty(&crate::NewPty {
        session: crate::PtySession {
            recipe_plugin_sha256: plugin.map(str::to_string),
            ..crate::PtySession::starting(
                id.into(),
                "shell".into(),
                Risk::High,
                "token:a".into(),
                1,
            )
        },
        action_hash: "ph".into(),
        socket_path: "/nowhere".into(),
        secret_hash: "sh".into(),
        boot_id: "b".into(),
    })
    .await
    .expect("pty");
}

/// `every_engine! { #[tokio::test] async fn name(s) { … } }`: the body runs with `s: Store`
/// once per engine, as the tests `name::sqlite` and `name::postgres`.
macro_rules! every_engine {
    ($(#[$attr:meta])* async fn $name:ident($s:ident) $body:block $($rest:tt)*) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body($s: $crate::Store) $body

            $(#[$attr])*
            async fn sqlite() {
                let (_dir, s) = $crate::testing::sqlite().await;
                body(s).await;
            }

            $(#[$attr])*
            async fn postgres() {
                if let Some((_dir, s)) = $crate::testing::postgres().await {
                    body(s).await;
                }
            }
        }
        $crate::testing::every_engine! { $($rest)* }
    };
    () => {};
}
pub(crate) use every_engine;
