//! The application store on a real nats-server: one owner per name, versions under keys of
//! their own, records of earlier versions still read, every key sealed and checked.

use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use trellis_lattice::record::RecordGate;
use trellis_lattice::signing::{OperatorKey, TrustedOperator};
use trellis_scheduler::apps::claims::{Claim, PENDING_MS};
use trellis_scheduler::apps::{AppError, AppRecord, AppStore, Deployed, MAX_VERSIONS};
use trellis_scheduler::manifest::Manifest;
use trellis_tests::NatsServer;

const LATTICE: &str = "appstore";
const BUCKET: &str = "TRELLIS_appstore_APPS";

fn manifest(name: &str, version: &str, component: &str) -> Manifest {
    let yaml = format!(
        "name: {name}\nversion: '{version}'\ndescription: '{}'\ncomponents:\n  - name: \
         {component}\n    source: sha256:{}\n",
        "x".repeat(2000),
        "a".repeat(64)
    );
    Manifest::from_yaml(&yaml).expect("test manifest")
}

async fn jetstream(nats: &NatsServer) -> jetstream::Context {
    jetstream::new(async_nats::connect(&nats.url()).await.expect("connects"))
}

async fn store(nats: &NatsServer) -> AppStore {
    AppStore::open(&jetstream(nats).await, LATTICE, 1).await.expect("bucket")
}

async fn keys(bucket: &kv::Store, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = bucket.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
    keys.retain(|k| k.starts_with(prefix));
    keys
}

#[tokio::test]
async fn of_two_concurrent_first_deploys_of_a_name_one_wins() {
    let nats = NatsServer::start(None).await.expect("nats-server starts");
    // Two writers of their own, as two operators' CLIs would be.
    let (a, b) = (store(&nats).await, store(&nats).await);
    for round in 0..10 {
        let name = format!("race{round}");
        let (cart, till) = (format!("cart{round}"), format!("till{round}"));
        let (mine, theirs) = (manifest(&name, "1", &cart), manifest(&name, "1", &till));
        let (first, second) = tokio::join!(a.deploy(&mine), b.deploy(&theirs));
        let (won, lost) = match (first, second) {
            (Ok(Deployed::New), Err(e)) => (mine, e),
            (Err(e), Ok(Deployed::New)) => (theirs, e),
            other => panic!("round {round}: both or neither won: {other:?}"),
        };
        assert!(matches!(lost, AppError::VersionTaken { .. }), "{lost}");
        let record = a.get(&name).await.unwrap().expect("deployed");
        assert_eq!(record.versions, vec![won]);
        assert_eq!(record.history.len(), 1, "one deploy recorded");
    }
}

#[tokio::test]
async fn versions_live_under_keys_of_their_own_and_old_ones_go() {
    let nats = NatsServer::start(None).await.expect("nats-server starts");
    let apps = store(&nats).await;
    let bucket = jetstream(&nats).await.get_key_value(BUCKET).await.unwrap();
    for v in 0..MAX_VERSIONS + 8 {
        let deployed = apps.deploy(&manifest("shop", &v.to_string(), "cart")).await.unwrap();
        assert_eq!(deployed, Deployed::New);
    }
    let again = apps.deploy(&manifest("shop", &(MAX_VERSIONS + 7).to_string(), "cart")).await;
    assert_eq!(again.unwrap(), Deployed::Unchanged);
    let spec = bucket.get("spec.shop").await.unwrap().unwrap();
    // Forty manifests of 2 kB each would be 80 kB; the index names them.
    assert!(spec.len() < 16 * 1024, "spec.shop is {} bytes", spec.len());
    assert_eq!(keys(&bucket, "version.shop.").await.len(), MAX_VERSIONS, "trimmed ones purged");
    let record = apps.get("shop").await.unwrap().unwrap();
    assert_eq!(record.versions.len(), MAX_VERSIONS);
    assert_eq!(record.current_manifest(), record.versions.last());

    // A version's key names its content: an altered one is refused.
    let key = keys(&bucket, "version.shop.").await.remove(0);
    let mut altered = bucket.get(&key).await.unwrap().unwrap().to_vec();
    let at = altered.iter().position(|&b| b == b'x').unwrap();
    altered[at] = b'y';
    bucket.put(&key, altered.into()).await.unwrap();
    let fresh = store(&nats).await;
    let err = fresh.get("shop").await.unwrap_err().to_string();
    assert!(err.contains("altered"), "{err}");
    assert!(fresh.all().await.unwrap().is_empty(), "an unreadable record is skipped");
}

#[tokio::test]
async fn a_record_written_whole_is_read_and_rewritten_as_an_index() {
    let nats = NatsServer::start(None).await.expect("nats-server starts");
    let apps = store(&nats).await;
    let bucket = jetstream(&nats).await.get_key_value(BUCKET).await.unwrap();
    let v1 = manifest("old", "1", "cart");
    let mut whole = AppRecord {
        name: "old".into(),
        versions: vec![v1.clone()],
        current: Some(v1.version.clone()),
        stable: Some(v1.version.clone()),
        history: vec![],
    };
    whole.record("deploy", "1", "");
    whole.record("deployed", "1", "");
    // As a lattice upgraded in place has it: every manifest inline.
    bucket.put("spec.old", serde_json::to_vec(&whole).unwrap().into()).await.unwrap();
    assert_eq!(apps.get("old").await.unwrap(), Some(whole.clone()));
    assert_eq!(apps.all().await.unwrap(), vec![whole.clone()]);

    let v2 = manifest("old", "2", "cart");
    assert_eq!(apps.deploy(&v2).await.unwrap(), Deployed::New);
    let record = apps.get("old").await.unwrap().unwrap();
    assert_eq!(record.versions, vec![v1, v2]);
    assert_eq!(record.stable, whole.stable);
    assert_eq!(record.history.len(), 3);
    let spec = bucket.get("spec.old").await.unwrap().unwrap();
    let spec: serde_json::Value = serde_json::from_slice(&spec).unwrap();
    assert!(spec.get("versions").is_none() && spec["kept"].as_array().unwrap().len() == 2);
    assert_eq!(keys(&bucket, "version.old.").await.len(), 2);
    assert_eq!(apps.rollback("old", None).await.unwrap().as_str(), "1");
}

#[tokio::test]
async fn every_key_is_sealed_and_checked() {
    let nats = NatsServer::start(None).await.expect("nats-server starts");
    let operator = Arc::new(OperatorKey::generate());
    let trusted: TrustedOperator = operator.public_key().parse().unwrap();
    let writer = store(&nats).await.with_sealer(Some(operator));
    let gate = Arc::new(RecordGate::new(vec![trusted], false));
    writer.deploy(&manifest("sealed", "1", "cart")).await.unwrap();
    let reader = store(&nats).await.with_gate(gate.clone());
    assert_eq!(reader.all_checked().await.unwrap().0.len(), 1);

    // Somebody with access to the bucket writes a version plainly: the reader refuses it.
    let bucket = jetstream(&nats).await.get_key_value(BUCKET).await.unwrap();
    let key = keys(&bucket, "version.sealed.").await.remove(0);
    let sealed = bucket.get(&key).await.unwrap().unwrap();
    let inner = trellis_lattice::record::Stored::parse(&sealed).contents().unwrap().to_vec();
    bucket.put(&key, inner.into()).await.unwrap();
    let reader = store(&nats).await.with_gate(gate);
    let (read, refused) = reader.all_checked().await.unwrap();
    assert!(read.is_empty());
    assert_eq!(refused, vec!["sealed".to_owned()]);
}

#[tokio::test]
async fn changes_to_a_missing_application_say_so() {
    let nats = NatsServer::start(None).await.expect("nats-server starts");
    let apps = store(&nats).await;
    let err = apps.undeploy("ghost").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "no application `ghost` in lattice `appstore`; list them with `trellis app list`"
    );
    assert!(!apps.mark_stable("ghost", "1").await.is_ok_and(|changed| changed));
    apps.deploy(&manifest("here", "1", "cart")).await.unwrap();
    apps.undeploy("here").await.unwrap();
    let err = apps.undeploy("here").await.unwrap_err();
    assert!(matches!(err, AppError::NotDeployed { .. }), "{err}");
}

fn taken_by(result: Result<Deployed, AppError>) -> String {
    match result {
        Err(AppError::NameTaken { owner, .. }) => owner,
        other => panic!("expected the name to be taken, got {other:?}"),
    }
}

#[tokio::test]
async fn of_two_applications_deploying_one_name_at_once_one_wins() {
    let nats = NatsServer::start(None).await.expect("nats-server starts");
    let (a, b) = (store(&nats).await, store(&nats).await);
    let bucket = jetstream(&nats).await.get_key_value(BUCKET).await.unwrap();
    for round in 0..10 {
        let web = format!("web{round}");
        let (shop, blog) = (format!("shop{round}"), format!("blog{round}"));
        let (mine, theirs) = (manifest(&shop, "1", &web), manifest(&blog, "1", &web));
        let (first, second) = tokio::join!(a.deploy(&mine), b.deploy(&theirs));
        let (winner, loser, refused) = match (first, second) {
            (Ok(Deployed::New), lost) => (&shop, &blog, lost),
            (lost, Ok(Deployed::New)) => (&blog, &shop, lost),
            other => panic!("round {round}: both or neither won: {other:?}"),
        };
        assert_eq!(&taken_by(refused), winner, "round {round}: the loser names the winner");
        assert!(a.get(loser).await.unwrap().is_none(), "round {round}: the loser wrote nothing");
        let claim = bucket.get(format!("name.{web}")).await.unwrap().expect("claimed");
        let claim: Claim = serde_json::from_slice(&claim).unwrap();
        assert_eq!(&claim.app, winner);
    }
}

#[tokio::test]
async fn a_name_is_free_again_once_its_application_drops_it() {
    let nats = NatsServer::start(None).await.expect("nats-server starts");
    let apps = store(&nats).await;
    apps.deploy(&manifest("shop", "1", "web")).await.unwrap();
    assert_eq!(taken_by(apps.deploy(&manifest("blog", "1", "web")).await), "shop");
    // Undeployed: free at once, not after a claim's grace period.
    apps.undeploy("shop").await.unwrap();
    assert_eq!(apps.deploy(&manifest("blog", "1", "web")).await.unwrap(), Deployed::New);
    assert_eq!(taken_by(apps.deploy(&manifest("shop", "2", "web")).await), "blog");
    let err = apps.rollback("shop", Some("1")).await.unwrap_err();
    assert!(matches!(&err, AppError::NameTaken { owner, .. } if owner == "blog"), "{err}");
    // A new version without the name frees it too.
    apps.deploy(&manifest("blog", "2", "page")).await.unwrap();
    assert_eq!(apps.deploy(&manifest("shop", "2", "web")).await.unwrap(), Deployed::New);
}

#[tokio::test]
async fn a_claim_left_half_way_lapses_and_unclaimed_old_applications_keep_their_names() {
    let nats = NatsServer::start(None).await.expect("nats-server starts");
    let apps = store(&nats).await;
    let bucket = jetstream(&nats).await.get_key_value(BUCKET).await.unwrap();
    let now = trellis_lattice::envelope::unix_ms();
    let claim =
        |app: &str, at_ms| serde_json::to_vec(&Claim { app: app.into(), at_ms }).unwrap().into();
    // A deploy that claimed and stopped before writing its record: fresh, it holds...
    bucket.put("name.web", claim("crashed", now)).await.unwrap();
    assert_eq!(taken_by(apps.deploy(&manifest("shop", "1", "web")).await), "crashed");
    // ...and once older than its grace period it is taken over.
    bucket.put("name.web", claim("crashed", now - PENDING_MS - 1)).await.unwrap();
    assert_eq!(apps.deploy(&manifest("shop", "1", "web")).await.unwrap(), Deployed::New);

    // An application written before names were claimed has no claim key, and keeps its name.
    let old = manifest("old", "1", "cart");
    let mut whole = AppRecord {
        name: "old".into(),
        versions: vec![old.clone()],
        current: Some(old.version.clone()),
        stable: None,
        history: vec![],
    };
    whole.record("deploy", "1", "");
    bucket.put("spec.old", serde_json::to_vec(&whole).unwrap().into()).await.unwrap();
    assert_eq!(taken_by(apps.deploy(&manifest("blog", "1", "cart")).await), "old");
    assert!(bucket.get("name.cart").await.unwrap().is_none(), "the refused claim is released");
}
