//! The container image scripts/image.sh builds (scripts/test.sh builds it
//! before the tests): pushed with skopeo into the test registry behind Apache
//! from the sample, with a credential the service minted; pulled back; its
//! configuration read from the registry (user, entrypoint, exposed port,
//! volume, environment, labels); and the pulled image's root file system
//! unpacked and run as the image says (its user, working directory,
//! environment, entrypoint and command, chrooted into it, with no container
//! engine), which shows the libraries it carries are enough for the service
//! to start, create its database in the volume and mint a credential.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::clients::{skopeo, Creds, Run};
use crate::support::process::{free_port, spawn_listening};
use crate::support::tools::find_in_path;
use crate::support::{unique, Stack};

const REPO: &str = "registry-rubber";
const LABEL: &str = "org.opencontainers.image.";
/// The image's user, and the volume it owns.
const IMAGE_USER: &str = "65532:65532";
const VOLUME: &str = "/var/lib/registry-rubber";
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The OCI layout to push: $REGISTRY_RUBBER_IMAGE, or the one
/// scripts/image.sh writes; tagged with this version.
fn layout() -> PathBuf {
    std::env::var_os("REGISTRY_RUBBER_IMAGE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/image/oci"),
        PathBuf::from,
    )
}

fn umoci() -> PathBuf {
    find_in_path("umoci").expect("`umoci` (Debian package umoci) unpacks the pulled image")
}

/// `skopeo inspect --config` of the image in the stack's registry.
fn remote_config(stack: &Stack, creds: Creds<'_>, tag: &str) -> Value {
    let run = Run::of(
        format!("inspect --config of {REPO}:{tag}"),
        skopeo()
            .args(["inspect", "--config", "--creds"])
            .arg(format!("{}:{}", creds.user, creds.password))
            .arg("--cert-dir")
            .arg(&stack.pki.skopeo_cert_dir)
            .arg(format!("docker://{}/{REPO}:{tag}", stack.registry_host)),
    );
    serde_json::from_str(run.expect_success()).expect("the image's config is JSON")
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected an array, found {value}"))
        .iter()
        .map(|v| v.as_str().expect("a string"))
        .collect()
}

/// A command run inside `rootfs` as the image would run it: chrooted there,
/// in its working directory, as its user and group with no other group,
/// with only its environment (and `extra`).
fn in_image(rootfs: &Path, config: &Value, argv: &[&str], extra: &[(&str, String)]) -> Command {
    let (uid, gid) = IMAGE_USER.split_once(':').unwrap();
    let (uid, gid): (libc::uid_t, libc::gid_t) = (uid.parse().unwrap(), gid.parse().unwrap());
    let root = CString::new(rootfs.as_os_str().as_bytes()).unwrap();
    let workdir = CString::new(config["WorkingDir"].as_str().expect("a WorkingDir")).unwrap();
    let mut command = Command::new(argv[0]);
    command.args(&argv[1..]).env_clear();
    for assignment in strings(&config["Env"]) {
        let (k, v) = assignment.split_once('=').expect("Env entries are K=V");
        command.env(k, v);
    }
    command.envs(extra.iter().map(|(k, v)| (k, v)));
    // SAFETY: chroot, chdir, setgroups, setgid and setuid are
    // async-signal-safe; the strings were made before the fork.
    unsafe {
        command.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            check(libc::chroot(root.as_ptr()))?;
            check(libc::chdir(workdir.as_ptr()))?;
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setgid(gid))?;
            check(libc::setuid(uid))
        });
    }
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_is_pushed_through_apache_pulled_back_and_runs_as_configured() {
    let layout = layout();
    let tag = env!("CARGO_PKG_VERSION");
    assert!(
        layout.join("index.json").is_file(),
        "{} holds no OCI image: build it with scripts/image.sh (scripts/test.sh does, before the \
         tests)",
        layout.display()
    );
    let umoci = umoci();
    let stack = Stack::start();
    let user = unique("img");
    let password = unique("image-secret-");
    stack.add(&user, &password).await;
    let creds = Creds::new(&user, &password);

    stack.push(creds, &layout, tag, REPO).expect_success();
    let pulled = stack.dir().join("pulled");
    stack.pull(creds, REPO, tag, &pulled).expect_success();
    // Refused without the credential, as every repository is.
    stack.inspect(None, REPO, tag).expect_refused();

    let image = remote_config(&stack, creds, tag);
    let config = &image["config"];
    assert_eq!(config["User"], IMAGE_USER, "non-root: {image}");
    assert_eq!(strings(&config["Entrypoint"]), ["/usr/bin/registry-rubber"]);
    assert_eq!(strings(&config["Cmd"]), ["serve"]);
    assert!(
        config["ExposedPorts"].get("5080/tcp").is_some(),
        "5080/tcp exposed: {image}"
    );
    assert!(
        config["Volumes"].get(VOLUME).is_some(),
        "{VOLUME} a volume: {image}"
    );
    assert_eq!(config["WorkingDir"], VOLUME);
    let env = strings(&config["Env"]);
    assert!(env.contains(&"RUBBER_LISTEN=0.0.0.0:5080"), "{env:?}");
    assert!(env.contains(&"RUBBER_ALLOW_GET_MUTATIONS=false"), "{env:?}");
    let labels = &config["Labels"];
    assert_eq!(labels[format!("{LABEL}title")], "registry-rubber");
    assert_eq!(labels[format!("{LABEL}version")], tag);
    assert_eq!(labels[format!("{LABEL}licenses")], "MIT");
    for label in ["description", "revision", "created"] {
        assert!(
            labels[format!("{LABEL}{label}")]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "{LABEL}{label}: {labels}"
        );
    }
    assert_eq!(image["os"], "linux");

    // The pulled image, unpacked as a runtime would and run as it says.
    let bundle = stack.dir().join("bundle");
    let out = Command::new(&umoci)
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", pulled.display()))
        .arg(&bundle)
        .output()
        .expect("run umoci unpack");
    assert!(
        out.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rootfs = bundle.join("rootfs");
    let volume = rootfs.join(VOLUME.trim_start_matches('/'));
    let meta = std::fs::metadata(&volume).expect("the volume's directory is in the image");
    assert_eq!(
        format!("{}:{}", meta.uid(), meta.gid()),
        IMAGE_USER,
        "{VOLUME} is the image user's"
    );
    // localhost resolves without a runtime's own /etc/hosts (a MySQL
    // database_url on localhost, under a runtime that adds none).
    let hosts = std::fs::read_to_string(rootfs.join("etc/hosts")).unwrap_or_default();
    assert!(
        hosts
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["127.0.0.1", "localhost"]),
        "the image's /etc/hosts names localhost: {hosts:?}"
    );
    let entrypoint: Vec<&str> = strings(&config["Entrypoint"]);
    let version = in_image(&rootfs, config, &[entrypoint[0], "--version"], &[])
        .output()
        .expect("run the image's binary");
    assert!(
        version.status.success(),
        "the image's binary runs with the image's libraries only: {}",
        String::from_utf8_lossy(&version.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("registry-rubber {tag}")
    );

    // Entrypoint and Cmd, with the listen address a `docker run -e` would
    // give (this host's port 5080 may be taken).
    let port = free_port();
    let mut argv = entrypoint.clone();
    argv.extend(strings(&config["Cmd"]));
    let mut service = spawn_listening(
        "registry-rubber (image)",
        &mut in_image(
            &rootfs,
            config,
            &argv,
            &[("RUBBER_LISTEN", format!("127.0.0.1:{port}"))],
        ),
        &stack.dir().join("image-service.log"),
        port,
        START_TIMEOUT,
    );
    let minted = unique("img-inner");
    let minted_password = unique("inner-secret-");
    stack.handled_secret(&minted_password);
    let answer: Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/add"))
        .form(&[("user", &minted), ("passwd", &minted_password)])
        .send()
        .await
        .expect("POST /add to the image's service")
        .json()
        .await
        .expect("a JSON answer");
    assert_eq!(answer["response"], "OKAY", "{answer}");
    let db = volume.join("registry-rubber.sqlite");
    let meta = std::fs::metadata(&db).unwrap_or_else(|e| {
        panic!(
            "serve created its database in the volume, {}: {e}\n{}",
            db.display(),
            service.log()
        )
    });
    assert_eq!(format!("{}:{}", meta.uid(), meta.gid()), IMAGE_USER);
    service.stop();
    assert!(
        service.exited().is_some_and(|s| s.success()),
        "the image's service stops cleanly on SIGTERM:\n{}",
        service.log()
    );
}
