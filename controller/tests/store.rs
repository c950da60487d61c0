//! The same suite against both store backends: the embedded redb file and a
//! real etcd started by the test.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lb_controller::store::{Change, Store, StoreError, StoreEvent};

fn change(n: u64) -> Change {
    let mut topology = support::seed();
    topology.services[0].port = 5000 + n as u32;
    Change {
        author: format!("tester{n}"),
        time_ms: 1_700_000_000_000 + n,
        message: format!("change {n}"),
        topology,
    }
}

async fn empty_store_is_revision_zero(store: Arc<dyn Store>) {
    let current = store.current().await.unwrap();
    assert_eq!(current.revision, 0);
    assert_eq!(current.topology, Default::default());
    assert!(store.history(10).await.unwrap().is_empty());
    assert_eq!(store.at(1).await.unwrap(), None);
}

async fn commits_grow_revisions_and_keep_history(store: Arc<dyn Store>) {
    for n in 0..5u64 {
        let record = store.commit(n, change(n)).await.unwrap();
        assert_eq!(record.revision, n + 1);
    }
    let current = store.current().await.unwrap();
    assert_eq!(current.revision, 5);
    assert_eq!(current.topology, change(4).topology);
    let history = store.history(3).await.unwrap();
    let revisions: Vec<u64> = history.iter().map(|r| r.revision).collect();
    assert_eq!(revisions, vec![5, 4, 3]);
    assert_eq!(history[1].author, "tester3");
    assert_eq!(history[1].message, "change 3");
    assert_eq!(history[1].time_ms, 1_700_000_000_003);
    assert_eq!(history[1].topology, change(3).topology);
    let second = store.at(2).await.unwrap().unwrap();
    assert_eq!(second.topology, change(1).topology);
    assert_eq!(store.history(100).await.unwrap().len(), 5);
}

async fn stale_expected_revision_is_refused_and_nothing_written(store: Arc<dyn Store>) {
    store.commit(0, change(0)).await.unwrap();
    store.commit(1, change(1)).await.unwrap();
    let err = store.commit(1, change(9)).await.unwrap_err();
    assert_eq!(
        err,
        StoreError::Conflict {
            expected: 1,
            actual: 2
        }
    );
    let err = store.commit(7, change(9)).await.unwrap_err();
    assert_eq!(
        err,
        StoreError::Conflict {
            expected: 7,
            actual: 2
        }
    );
    let current = store.current().await.unwrap();
    assert_eq!(current.revision, 2);
    assert_eq!(current.topology, change(1).topology);
    assert_eq!(store.history(10).await.unwrap().len(), 2);
}

async fn concurrent_commits_on_one_revision_one_wins(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for n in 0..8u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(
            async move { store.commit(0, change(n)).await },
        ));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(record) => {
                assert_eq!(record.revision, 1);
                ok += 1;
            }
            Err(StoreError::Conflict {
                expected: 0,
                actual: 1,
            }) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(store.current().await.unwrap().revision, 1);
}

async fn one_write_commits_several_revisions_or_none(store: Arc<dyn Store>) {
    store.commit(0, change(0)).await.unwrap();
    let mut watch = store.watch().await.unwrap();
    let records = store
        .commit_all(1, vec![change(1), change(2), change(3)])
        .await
        .unwrap();
    let revisions: Vec<u64> = records.iter().map(|r| r.revision).collect();
    assert_eq!(revisions, vec![2, 3, 4]);
    let current = store.current().await.unwrap();
    assert_eq!(current.revision, 4);
    assert_eq!(current.topology, change(3).topology);
    let history = store.history(10).await.unwrap();
    let messages: Vec<&str> = history.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(
        messages,
        vec!["change 3", "change 2", "change 1", "change 0"]
    );
    assert_eq!(store.at(3).await.unwrap().unwrap().author, "tester2");
    // The watch sees the write once, at its last revision.
    let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("watch event within 5 s")
        .expect("stream open")
        .expect("no watch error");
    match event {
        StoreEvent::Topology(r) => assert_eq!(r.revision, 4),
        other => panic!("expected revision 4, got {other:?}"),
    }
    // On a stale revision nothing of the write lands.
    let err = store
        .commit_all(2, vec![change(7), change(8)])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::Conflict {
            expected: 2,
            actual: 4
        }
    );
    let err = store.commit_all(9, vec![change(7)]).await.unwrap_err();
    assert_eq!(
        err,
        StoreError::Conflict {
            expected: 9,
            actual: 4
        }
    );
    assert_eq!(store.current().await.unwrap().revision, 4);
    assert_eq!(store.history(10).await.unwrap().len(), 4);
    assert_eq!(store.at(5).await.unwrap(), None);
}

async fn readiness_is_kept(store: Arc<dyn Store>) {
    assert!(store.readiness().await.unwrap().is_empty());
    let vips: BTreeSet<String> = ["192.168.56.185".to_string()].into();
    store.set_readiness("rs1", vips.clone()).await.unwrap();
    store.set_readiness("rs2", BTreeSet::new()).await.unwrap();
    let readiness = store.readiness().await.unwrap();
    assert_eq!(readiness.get("rs1"), Some(&vips));
    assert_eq!(readiness.get("rs2"), Some(&BTreeSet::new()));
    assert_eq!(readiness.len(), 2);
}

async fn watch_sees_commits_and_readiness(store: Arc<dyn Store>) {
    let mut watch = store.watch().await.unwrap();
    store.commit(0, change(0)).await.unwrap();
    let vips: BTreeSet<String> = ["192.168.56.185".to_string()].into();
    store.set_readiness("rs1", vips.clone()).await.unwrap();
    store.commit(1, change(1)).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("watch event within 5 s")
            .expect("stream open")
            .expect("no watch error");
        seen.push(event);
    }
    match &seen[0] {
        StoreEvent::Topology(r) => assert_eq!(r.revision, 1),
        other => panic!("expected revision 1, got {other:?}"),
    }
    assert_eq!(
        seen[1],
        StoreEvent::Readiness {
            node: "rs1".into(),
            vips
        }
    );
    match &seen[2] {
        StoreEvent::Topology(r) => {
            assert_eq!(r.revision, 2);
            assert_eq!(r.topology, change(1).topology);
        }
        other => panic!("expected revision 2, got {other:?}"),
    }
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    let backend = super::support::embedded();
                    super::$name(backend.store.clone()).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test]
                async fn $name() {
                    let backend = super::support::etcd().await;
                    super::$name(backend.store.clone()).await;
                }
            )*
        }
    };
}

both_backends!(
    empty_store_is_revision_zero,
    commits_grow_revisions_and_keep_history,
    stale_expected_revision_is_refused_and_nothing_written,
    concurrent_commits_on_one_revision_one_wins,
    one_write_commits_several_revisions_or_none,
    readiness_is_kept,
    watch_sees_commits_and_readiness,
);

#[tokio::test]
async fn embedded_store_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = lb_controller::store::embedded::EmbeddedStore::open(dir.path()).unwrap();
        store.commit(0, change(0)).await.unwrap();
        store.commit(1, change(1)).await.unwrap();
    }
    let store = lb_controller::store::embedded::EmbeddedStore::open(dir.path()).unwrap();
    let current = store.current().await.unwrap();
    assert_eq!(current.revision, 2);
    assert_eq!(current.topology, change(1).topology);
}

#[tokio::test]
async fn etcd_store_survives_etcd_restart_and_reports_unavailable_while_down() {
    let mut backend = support::etcd().await;
    let store = backend.store.clone();
    store.commit(0, change(0)).await.unwrap();
    backend.etcd.as_mut().unwrap().stop();
    let err = tokio::time::timeout(Duration::from_secs(10), store.current())
        .await
        .expect("an answer within 10 s")
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
    backend.etcd.as_mut().unwrap().restart().await;
    let mut current = store.current().await;
    for _ in 0..50 {
        if current.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        current = store.current().await;
    }
    assert_eq!(current.unwrap().revision, 1);
}

#[tokio::test]
async fn etcd_prefixes_are_independent() {
    let backend = support::etcd().await;
    let endpoint = backend.etcd.as_ref().unwrap().endpoint();
    let other = lb_controller::store::etcd::EtcdStore::connect(
        &[endpoint],
        "/other",
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    backend.store.commit(0, change(0)).await.unwrap();
    assert_eq!(other.current().await.unwrap().revision, 0);
    other.commit(0, change(5)).await.unwrap();
    assert_eq!(
        backend.store.current().await.unwrap().topology,
        change(0).topology
    );
}
