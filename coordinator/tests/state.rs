//! One contract for every `StateStore`: the embedded redb file and etcd (a real etcd process)
//! must behave alike, since the control plane cannot tell them apart.

use std::sync::Arc;

use kiln_coordinator::state::{EmbeddedStore, EtcdStore, StateError, StateStore};
use kiln_tests::etcd::Etcd;

fn contract(store: &dyn StateStore) {
    assert_eq!(store.get("jobs/a").expect("get"), None);
    store.put("jobs/a", b"1").expect("put");
    store.put("jobs/b", &[0, 255, 7]).expect("put binary");
    store.put("jobsx/c", b"3").expect("put");
    store.put("meta/n", b"3").expect("put");
    store.put("jobs/a", b"2").expect("overwrite");
    assert_eq!(store.get("jobs/a").expect("get"), Some(b"2".to_vec()));
    assert_eq!(
        store.list("jobs/").expect("list"),
        vec![
            ("jobs/a".to_owned(), b"2".to_vec()),
            ("jobs/b".to_owned(), vec![0, 255, 7])
        ],
        "a listing is the prefix's keys in key order, nothing else"
    );
    assert_eq!(store.list("nothing/").expect("list"), vec![]);

    assert_eq!(
        store
            .write_if(
                &[("x", None), ("meta/n", Some(b"4"))],
                &[("meta/n", None), ("x", Some(b"1"))]
            )
            .expect("txn"),
        Err(Some(b"3".to_vec())),
        "a failed comparison names the first differing key's value"
    );
    assert_eq!(store.get("x").expect("get"), None, "and writes nothing");
    assert_eq!(
        store
            .write_if(&[("meta/n", None)], &[("x", Some(b"1"))])
            .expect("txn"),
        Err(Some(b"3".to_vec())),
        "an expected absence fails on a present key"
    );
    assert_eq!(
        store
            .write_if(&[("missing", Some(b"1"))], &[("x", Some(b"1"))])
            .expect("txn"),
        Err(None),
        "an expected value fails on an absent key"
    );
    assert_eq!(
        store
            .write_if(
                &[("meta/n", Some(b"3")), ("x", None)],
                &[("meta/n", None), ("x", Some(b"1"))]
            )
            .expect("txn"),
        Ok(())
    );
    assert_eq!(store.get("meta/n").expect("get"), None, "deleted");
    assert_eq!(store.get("x").expect("get"), Some(b"1".to_vec()));
}

/// Compare-and-swap increments from several threads: none is lost, none applied twice.
fn no_lost_updates(store: Arc<dyn StateStore>) {
    const THREADS: u32 = 4;
    const EACH: u32 = 20;
    store.put("counter", b"0").expect("put");
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    loop {
                        let seen = store.get("counter").expect("get").expect("counter");
                        let n: u32 = String::from_utf8_lossy(&seen).parse().expect("number");
                        let next = (n + 1).to_string();
                        let cas = store
                            .write_if(
                                &[("counter", Some(&seen))],
                                &[("counter", Some(next.as_bytes()))],
                            )
                            .expect("txn");
                        if cas.is_ok() {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread");
    }
    assert_eq!(
        store.get("counter").expect("get"),
        Some((THREADS * EACH).to_string().into_bytes())
    );
}

#[test]
fn the_embedded_store_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    contract(&store);
    no_lost_updates(Arc::new(store));
}

#[test]
fn the_etcd_store_keeps_the_contract() {
    let etcd = Etcd::start();
    let store = EtcdStore::connect(&[etcd.endpoint()], "/kiln-test").expect("connect");
    contract(&store);
    no_lost_updates(Arc::new(store.clone()));
    let other = EtcdStore::connect(&[etcd.endpoint()], "/kiln-other/").expect("connect");
    assert_eq!(
        other.list("").expect("list"),
        vec![],
        "prefixes do not see each other"
    );
}

#[test]
fn an_etcd_restart_loses_nothing() {
    let mut etcd = Etcd::start();
    let store = EtcdStore::connect(&[etcd.endpoint()], "/kiln/").expect("connect");
    store.put("jobs/a", b"kept").expect("put");
    etcd.restart();
    // The same client reconnects: the first requests may still meet the restart.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let value = loop {
        match store.get("jobs/a") {
            Ok(value) => break value,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("waiting for etcd: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("etcd did not come back: {e}"),
        }
    };
    assert_eq!(value, Some(b"kept".to_vec()));
    store
        .put("jobs/b", b"new")
        .expect("write after the restart");
}

#[test]
fn a_fenced_store_writes_only_while_its_leader_key_exists() {
    let etcd = Etcd::start();
    let store = EtcdStore::connect(&[etcd.endpoint()], "/kiln/").expect("connect");
    let fenced = store.fenced(b"/kiln/leader/1".to_vec());
    assert!(matches!(
        fenced.put("jobs/a", b"1"),
        Err(StateError::Fenced(_))
    ));
    store.put("leader/1", b"http://me").expect("leader key");
    fenced
        .put("jobs/a", b"1")
        .expect("a write while the key exists");
    assert_eq!(
        fenced
            .write_if(&[("jobs/a", Some(b"9"))], &[])
            .expect("txn"),
        Err(Some(b"1".to_vec())),
        "a failed comparison under a live fence is an ordinary refusal"
    );
    store
        .write_if(&[], &[("leader/1", None)])
        .expect("the key goes, as with an expired lease")
        .expect("unconditional");
    assert!(matches!(
        fenced.put("jobs/a", b"2"),
        Err(StateError::Fenced(_))
    ));
    assert!(matches!(
        fenced.write_if(&[("jobs/a", Some(b"1"))], &[("jobs/a", Some(b"3"))]),
        Err(StateError::Fenced(_))
    ));
    assert_eq!(
        store.get("jobs/a").expect("get"),
        Some(b"1".to_vec()),
        "nothing written"
    );
}
