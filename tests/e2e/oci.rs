//! A tiny OCI image layout written from scratch: one gzipped tar layer holding
//! one file with content unique to the test, its config and its manifest.
//! The tar and gzip writers are minimal (a ustar header; deflate "stored"
//! blocks, which every gzip reader accepts), so no compression crate is needed.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::tools::tools;

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Path of the one file inside the layer.
pub const FILE_IN_LAYER: &str = "rubber/proof.txt";

/// An image written as an OCI layout.
pub struct Image {
    pub layout: PathBuf,
    pub tag: String,
    /// `sha256:...` of the gzipped layer blob.
    pub layer_digest: String,
    /// The content of [`FILE_IN_LAYER`].
    pub content: String,
}

/// Writes an OCI layout at `layout` holding one image tagged `tag`, whose
/// layer carries `content` in [`FILE_IN_LAYER`].
pub fn write_image(layout: &Path, tag: &str, content: &str) -> Image {
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap_or_else(|e| panic!("create {}: {e}", blobs.display()));
    let write_blob = |bytes: &[u8]| -> (String, usize) {
        let hex = sha256_hex(bytes);
        let path = blobs.join(&hex);
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        (format!("sha256:{hex}"), bytes.len())
    };

    let tar = tar_with_one_file(FILE_IN_LAYER, content.as_bytes());
    let diff_id = format!("sha256:{}", sha256_hex(&tar));
    let (layer_digest, layer_size) = write_blob(&gzip_stored(&tar));

    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let (config_digest, config_size) = write_blob(&to_bytes(&config));

    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": LAYER_TYPE, "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = write_blob(&to_bytes(&manifest));

    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MANIFEST_TYPE,
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {REF_NAME: tag},
        }],
    });
    write_json(&layout.join("index.json"), &index);
    write_json(
        &layout.join("oci-layout"),
        &json!({"imageLayoutVersion": "1.0.0"}),
    );
    Image {
        layout: layout.to_owned(),
        tag: tag.to_owned(),
        layer_digest,
        content: content.to_owned(),
    }
}

/// What a pulled layout holds under `tag`: the layer's digest (checked
/// against the blob's bytes) and the content of [`FILE_IN_LAYER`], extracted
/// with the tar program.
pub fn read_image(layout: &Path, tag: &str) -> (String, String) {
    let index = read_json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let entry = manifests
        .iter()
        .find(|m| m["annotations"][REF_NAME] == tag)
        .unwrap_or_else(|| panic!("{} lists no image tagged {tag}: {index}", layout.display()));
    let manifest = read_json(&blob_path(layout, json_str(&entry["digest"])));
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        layers.len(),
        1,
        "the pulled manifest has one layer: {manifest}"
    );
    let layer_digest = json_str(&layers[0]["digest"]).to_owned();
    let blob = blob_path(layout, &layer_digest);
    let bytes = std::fs::read(&blob).unwrap_or_else(|e| panic!("read {}: {e}", blob.display()));
    assert_eq!(
        format!("sha256:{}", sha256_hex(&bytes)),
        layer_digest,
        "the pulled layer's bytes match its digest"
    );
    let output = Command::new(&tools().tar)
        .arg("-xzOf")
        .arg(&blob)
        .arg(FILE_IN_LAYER)
        .output()
        .expect("run tar");
    assert!(
        output.status.success(),
        "tar could not extract {FILE_IN_LAYER} from the pulled layer: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        layer_digest,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
    layout.join("blobs/sha256").join(hex)
}

fn json_str(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, found {value}"))
}

fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialize JSON")
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, to_bytes(value))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A POSIX ustar archive holding one regular file (mode 0644, owner 0:0,
/// mtime 0), with its parent directories implied.
fn tar_with_one_file(name: &str, data: &[u8]) -> Vec<u8> {
    assert!(name.len() < 100, "tar name fits the 100-byte field");
    let mut header = [0u8; 512];
    let mut field = |offset: usize, value: &[u8]| {
        header[offset..offset + value.len()].copy_from_slice(value);
    };
    field(0, name.as_bytes());
    field(100, b"0000644\0"); // mode
    field(108, b"0000000\0"); // uid
    field(116, b"0000000\0"); // gid
    field(124, format!("{:011o}\0", data.len()).as_bytes()); // size
    field(136, b"00000000000\0"); // mtime
    field(148, b"        "); // checksum, counted as spaces
    field(156, b"0"); // regular file
    field(257, b"ustar\0"); // magic
    field(263, b"00"); // version
    let checksum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{checksum:06o}\0 ").as_bytes());

    let mut tar = header.to_vec();
    tar.extend_from_slice(data);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
    // Two zero blocks end the archive.
    tar.resize(tar.len() + 1024, 0);
    tar
}

/// A gzip member (RFC 1952) whose deflate stream is made of stored
/// (uncompressed) blocks (RFC 1951, section 3.2.4).
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    // Magic, deflate, no flags, mtime 0, no extra flags, OS unknown.
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let mut chunks = data.chunks(usize::from(u16::MAX)).peekable();
    if chunks.peek().is_none() {
        // An empty input still needs one final block.
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let len = u16::try_from(chunk.len()).expect("chunks fit u16");
        out.push(u8::from(last)); // BFINAL, BTYPE=00
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    // ISIZE is the input length modulo 2^32.
    out.extend_from_slice(&((data.len() as u64 & 0xffff_ffff) as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE 802.3, reflected, as gzip uses it), bit by bit.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn crc32_matches_the_standard_check_value() {
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
}

#[test]
fn written_layer_is_read_back_by_tar_and_gzip() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let image = write_image(&dir.path().join("layout"), "v1", "unique content 42\n");
    let (digest, content) = read_image(&image.layout, "v1");
    assert_eq!(digest, image.layer_digest);
    assert_eq!(content, image.content);
}
