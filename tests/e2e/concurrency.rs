//! The web server's credential checks read the database while the service
//! writes it as fast as it can (Apache with its own query; nginx through the
//! service's auth_request door): a steady credential must never see a 500
//! (nor a 401). Each writer adds and removes its own names over and over,
//! every add with a new password, and keeps a ledger of what was
//! acknowledged in order: afterwards every name must be as its last
//! acknowledged operation left it, an added one with the hash of that add's
//! password (not an older add's), a removed one gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::oci;
use crate::support::ledger::{Ledger, Outcome};
use crate::support::{unique, Creds, Front, Stack, StackOptions};

/// How long the API is hammered.
const HAMMER_FOR: Duration = Duration::from_secs(5);
/// Concurrent API clients, each with its own set of names.
const WRITERS: usize = 8;
const NAMES_PER_WRITER: usize = 40;
/// Threads reading through the web server with the steady credential.
const READERS: usize = 2;
/// Authenticated GETs of /v2/ per curl process (one kept-alive connection).
const GETS_PER_BATCH: usize = 25;

#[derive(Default)]
struct WriterReport {
    /// Every call, in order, with how it ended.
    ledger: Ledger,
    acknowledged: usize,
    /// Calls that got no OKAY answer: status and body.
    failures: Vec<String>,
}

async fn hammer(stack: Arc<Stack>, writer: usize, until: Instant) -> WriterReport {
    let mut rng = StdRng::seed_from_u64(writer as u64);
    let names: Vec<String> = (0..NAMES_PER_WRITER)
        .map(|_| unique(&format!("load{writer}-")))
        .collect();
    let mut report = WriterReport::default();
    while Instant::now() < until {
        let name = &names[rng.gen_range(0..names.len())];
        let password = rng
            .gen_bool(0.6)
            .then(|| format!("pw-{:016x}", rng.gen::<u64>()));
        let (path, (status, answer)) = match &password {
            Some(password) => (
                "/add",
                stack
                    .api("/add", &[("user", name), ("passwd", password)])
                    .await,
            ),
            None => ("/remove", stack.api("/remove", &[("user", name)]).await),
        };
        let acknowledged = status == 200 && answer["response"] == "OKAY";
        let outcome = Outcome::of(acknowledged);
        match &password {
            Some(password) => report.ledger.add(name, password, outcome),
            None => report.ledger.remove(name, outcome),
        }
        if acknowledged {
            report.acknowledged += 1;
        } else {
            report
                .failures
                .push(format!("{path} {name}: {status} {answer}"));
        }
    }
    report
}

#[derive(Default)]
struct ReaderReport {
    inspects: usize,
    gets: usize,
    /// Every non-200 status of a GET, and every failed inspect.
    failures: Vec<String>,
}

/// Repeated `skopeo inspect` and batches of authenticated GETs of /v2/
/// through the web server with one credential that nothing touches.
fn read_steadily(stack: &Stack, creds: Creds<'_>, repo: &str, until: Instant) -> ReaderReport {
    let mut report = ReaderReport::default();
    while Instant::now() < until {
        let inspect = stack.inspect(Some(creds), repo, "v1");
        report.inspects += 1;
        if !inspect.succeeded() {
            report.failures.push(inspect.to_string());
        }
        for status in stack.get_registry_repeatedly("/v2/", creds, GETS_PER_BATCH) {
            report.gets += 1;
            if status != 200 {
                report.failures.push(format!("GET /v2/ answered {status}"));
            }
        }
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apache_never_fails_while_the_api_is_hammered() {
    reads_never_fail_while_the_api_is_hammered(Front::Apache).await;
}

/// Hammers the API with adds and removes while readers go through `front`
/// with a steady credential; asserts that no read failed and that the
/// database holds exactly what the API acknowledged.
pub(crate) async fn reads_never_fail_while_the_api_is_hammered(front: Front) {
    // {SHA} hashes cost nothing, so the writes come as fast as the store commits.
    let stack = Arc::new(Stack::start_with(StackOptions {
        front,
        hash_type: Some("sha1"),
        ..StackOptions::default()
    }));
    let through = front.name();
    let steady = unique("steady");
    let steady_password = unique("pw-");
    stack.add(&steady, &steady_password).await;
    let image = oci::write_image(&stack.dir().join("layout"), "v1", "steady\n");
    let repo = format!("e2e/{}", unique("steady"));
    stack
        .push(
            Creds::new(&steady, &steady_password),
            &image.layout,
            "v1",
            &repo,
        )
        .expect_success();

    let until = Instant::now() + HAMMER_FOR;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(hammer(Arc::clone(&stack), w, until)))
        .collect();
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let stack = Arc::clone(&stack);
            let (steady, steady_password) = (steady.clone(), steady_password.clone());
            let repo = repo.clone();
            tokio::task::spawn_blocking(move || {
                read_steadily(&stack, Creds::new(&steady, &steady_password), &repo, until)
            })
        })
        .collect();

    let mut ledger = Ledger::default();
    let mut acknowledged = 0;
    let mut api_failures = Vec::new();
    for writer in writers {
        let report = writer.await.expect("a writer task panicked");
        ledger.extend(report.ledger);
        acknowledged += report.acknowledged;
        api_failures.extend(report.failures);
    }
    let mut reads = ReaderReport::default();
    for reader in readers {
        let report = reader.await.expect("a reader panicked");
        reads.inspects += report.inspects;
        reads.gets += report.gets;
        reads.failures.extend(report.failures);
    }

    assert!(
        reads.failures.is_empty(),
        "requests through {through} failed while the API was busy ({} of {} GETs, {} inspects):\n{}",
        reads.failures.len(),
        reads.gets,
        reads.inspects,
        reads.failures.join("\n")
    );
    assert!(
        reads.inspects >= 3 && reads.gets >= 3 * GETS_PER_BATCH,
        "too few reads to prove anything: {} inspects, {} GETs",
        reads.inspects,
        reads.gets
    );
    assert!(
        api_failures.is_empty(),
        "the API failed {} of {} calls:\n{}",
        api_failures.len(),
        acknowledged + api_failures.len(),
        api_failures.join("\n")
    );
    assert!(
        acknowledged >= 200,
        "too few API calls to prove anything: {acknowledged}"
    );

    let mut stored = stack.stored_users_with_hashes();
    let steady_hash = stored
        .remove(&steady)
        .expect("the steady user is still there");
    assert!(registry_rubber::htpasswd::verify(
        &steady_password,
        &steady_hash
    ));
    let audit = ledger.audit(&stored);
    audit.assert_nothing_lost(&format!("after the hammering through {through}"));
    assert!(
        audit.present > 0 && audit.absent > 0,
        "names end added and removed: {} present, {} absent",
        audit.present,
        audit.absent
    );
    eprintln!(
        "{acknowledged} API calls acknowledged; {} names as their last acknowledged call left \
         them ({} added, with that add's password; {} removed), 0 lost; {} GETs and {} inspects \
         through {through}, all 200",
        audit.checked(),
        audit.present,
        audit.absent,
        reads.gets,
        reads.inspects
    );
}
