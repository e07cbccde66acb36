//! Model files from the Hugging Face hub: the local cache first, then a
//! download, with a quick reachability check so an offline host gets an
//! answer at once instead of after the HTTP client's retries.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hf_hub::Cache;
use hf_hub::api::sync::ApiBuilder;

use super::one_line;

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
const REACH_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub(crate) enum TokenizerFile {
    Json(PathBuf),
    Vocab(PathBuf),
}

#[derive(Debug)]
pub(crate) struct HubFiles {
    pub(crate) config: PathBuf,
    pub(crate) weights: PathBuf,
    pub(crate) tokenizer: TokenizerFile,
    /// The snapshot (commit) the files belong to, or "main" when unknown.
    pub(crate) revision: String,
}

/// The hub cache: `cache_dir` if given, else `HF_HUB_CACHE`, else `$HF_HOME/hub`
/// (hf-hub 0.5 itself only knows `HF_HOME`).
fn cache(cache_dir: Option<&Path>) -> Cache {
    if let Some(dir) = cache_dir {
        return Cache::new(dir.to_path_buf());
    }
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) if !dir.is_empty() => Cache::new(PathBuf::from(dir)),
        _ => Cache::from_env(),
    }
}

fn endpoint(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_string)
        .or_else(|| {
            std::env::var("HF_ENDPOINT")
                .ok()
                .filter(|e| !e.trim().is_empty())
        })
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
        .trim_end_matches('/')
        .to_string()
}

fn cached(cache: &Cache, repo: &str) -> Option<HubFiles> {
    let r = cache.model(repo.to_string());
    let config = r.get("config.json")?;
    let weights = r.get("model.safetensors")?;
    let tokenizer = match r.get("tokenizer.json") {
        Some(p) => TokenizerFile::Json(p),
        None => TokenizerFile::Vocab(r.get("vocab.txt")?),
    };
    let revision = revision_of(&config);
    Some(HubFiles {
        config,
        weights,
        tokenizer,
        revision,
    })
}

/// Cached files live in `snapshots/<commit>/<file>`.
fn revision_of(file: &Path) -> String {
    file.parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.len() >= 7 && n.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| "main".to_string())
}

/// The files of `repo` at commit `revision` in the cache, if all are there
/// (hf-hub's own lookup goes through `refs/`, which a commit has none of).
fn cached_at(cache: &Cache, repo: &str, revision: &str) -> Option<HubFiles> {
    let snapshot = cache
        .path()
        .join(format!("models--{}", repo.replace('/', "--")))
        .join("snapshots")
        .join(revision);
    let file = |name: &str| Some(snapshot.join(name)).filter(|p| p.exists());
    let tokenizer = match file("tokenizer.json") {
        Some(p) => TokenizerFile::Json(p),
        None => TokenizerFile::Vocab(file("vocab.txt")?),
    };
    Some(HubFiles {
        config: file("config.json")?,
        weights: file("model.safetensors")?,
        tokenizer,
        revision: revision.to_string(),
    })
}

/// The most this agent downloads of a model file: what it would read of it.
fn download_cap(file: &str) -> u64 {
    match file {
        "config.json" => super::MAX_CONFIG_BYTES,
        "model.safetensors" => super::MAX_WEIGHTS_BYTES,
        _ => super::MAX_TOKENIZER_BYTES,
    }
}

/// A hub cache keeps each large (LFS) file as `blobs/<SHA-256 of its
/// content>`, the hash the hub published for it; the snapshot's file links
/// there. Checks the content against that name, so a corrupt or altered
/// blob is refused rather than measured.
pub(crate) fn verify_blob(file: &Path) -> Result<(), String> {
    use std::io::Read as _;
    let Ok(target) = file.canonicalize() else {
        return Ok(());
    };
    let Some(expected) = target
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
    else {
        return Ok(()); // not an LFS blob (a small file, or a local copy)
    };
    let mut reader = std::fs::File::open(&target)
        .map_err(|e| format!("cannot read {}: {e}", target.display()))?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = reader
            .read(&mut buffer)
            .map_err(|e| format!("cannot read {}: {e}", target.display()))?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
    }
    let got: String = context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if got == expected {
        Ok(())
    } else {
        Err(format!(
            "{} does not match the hub's SHA-256 {expected} (its content hashes to {got}): the cache is corrupt or was altered; delete {} and fetch it again",
            file.display(),
            target.display()
        ))
    }
}

/// Finds or downloads the files of `repo`, at commit `revision` when given
/// (a pinned model), and checks the weights against the hub's hash. The
/// error is the one-line reason that goes inside `ModelError::HubUnavailable`.
pub(crate) fn fetch(
    repo: &str,
    revision: Option<&str>,
    cache_dir: Option<&Path>,
    explicit_endpoint: Option<&str>,
) -> Result<HubFiles, String> {
    let files = fetch_files(repo, revision, cache_dir, explicit_endpoint)?;
    verify_blob(&files.weights)?;
    Ok(files)
}

fn fetch_files(
    repo: &str,
    revision: Option<&str>,
    cache_dir: Option<&Path>,
    explicit_endpoint: Option<&str>,
) -> Result<HubFiles, String> {
    let cache = cache(cache_dir);
    let found = match revision {
        Some(rev) => cached_at(&cache, repo, rev),
        None => cached(&cache, repo),
    };
    if let Some(files) = found {
        return Ok(files);
    }
    let cache_path = cache.path().display().to_string();
    let endpoint = endpoint(explicit_endpoint);
    let offline = std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false);
    if offline {
        return Err(format!(
            "not in the cache at {cache_path} and HF_HUB_OFFLINE is set"
        ));
    }
    let host = host_port(&endpoint)
        .map(|(h, _)| h)
        .unwrap_or_else(|| endpoint.clone());
    reachable(&endpoint).map_err(|e| {
        format!(
            "not in the cache at {cache_path} and {host} is unreachable: {}",
            one_line(&e)
        )
    })?;

    let api = ApiBuilder::from_cache(cache)
        .with_progress(false)
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("cannot start the hub client: {}", one_line(&e.to_string())))?;
    let r = match revision {
        Some(rev) => api.repo(hf_hub::Repo::with_revision(
            repo.to_string(),
            hf_hub::RepoType::Model,
            rev.to_string(),
        )),
        None => api.model(repo.to_string()),
    };
    let get = |file: &str| {
        // The hub says how large a file is before it is fetched: one that
        // this agent would refuse to read is not downloaded either. (When
        // the size cannot be read, the download itself will say why.)
        if let Ok(meta) = api.metadata(&r.url(file)) {
            let (size, cap) = (meta.size() as u64, download_cap(file));
            if size > cap {
                return Err(format!(
                    "{file} of {repo} is {} MiB on the hub, more than the {} MiB this agent downloads for it",
                    size.div_ceil(1 << 20),
                    cap >> 20
                ));
            }
        }
        r.get(file).map_err(|e| {
            format!(
                "download of {file} from {host} failed: {}",
                one_line(&e.to_string())
            )
        })
    };
    let config = get("config.json")?;
    let weights = get("model.safetensors")?;
    let tokenizer = match get("tokenizer.json") {
        Ok(p) => TokenizerFile::Json(p),
        Err(json_err) => match r.get("vocab.txt") {
            Ok(p) => TokenizerFile::Vocab(p),
            Err(_) => return Err(format!("{json_err} (and the repository has no vocab.txt)")),
        },
    };
    let revision = revision
        .map(str::to_string)
        .unwrap_or_else(|| revision_of(&config));
    Ok(HubFiles {
        config,
        weights,
        tokenizer,
        revision,
    })
}

/// `https://host[:port]/...` → (host, port).
fn host_port(endpoint: &str) -> Option<(String, u16)> {
    let (rest, default_port) = if let Some(r) = endpoint.strip_prefix("https://") {
        (r, 443)
    } else if let Some(r) = endpoint.strip_prefix("http://") {
        (r, 80)
    } else {
        (endpoint, 443)
    };
    let authority = rest.split('/').next()?.rsplit('@').next()?;
    if authority.is_empty() {
        return None;
    }
    // [v6]:port, host:port or host.
    if let Some(v6) = authority.strip_prefix('[') {
        let (h, tail) = v6.split_once(']')?;
        let port = tail
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(default_port);
        return Some((h.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((authority.to_string(), default_port)),
    }
}

/// Name resolution plus a TCP connect, bounded by REACH_TIMEOUT in total.
/// Resolution has no timeout in std, so it runs on a helper thread that is
/// left behind if it hangs.
fn reachable(endpoint: &str) -> Result<(), String> {
    let (host, port) =
        host_port(endpoint).ok_or_else(|| format!("cannot parse the endpoint {endpoint}"))?;
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let result = (|| {
            let addrs: Vec<_> = (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {host}: {e}"))?
                .collect();
            let mut last = format!("{host} has no addresses");
            for addr in addrs {
                let left = REACH_TIMEOUT.saturating_sub(start.elapsed());
                if left.is_zero() {
                    return Err(format!(
                        "no answer from {host}:{port} within {REACH_TIMEOUT:?}"
                    ));
                }
                match TcpStream::connect_timeout(&addr, left) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = format!("cannot connect to {addr}: {e}"),
                }
            }
            Err(last)
        })();
        // The receiver may have given up already; nothing to report then.
        let _ = tx.send(result);
    });
    match rx.recv_timeout(REACH_TIMEOUT) {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", REACH_TIMEOUT.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_to_host_and_port() {
        assert_eq!(
            host_port("https://huggingface.co"),
            Some(("huggingface.co".into(), 443))
        );
        assert_eq!(
            host_port("http://127.0.0.1:8080/x"),
            Some(("127.0.0.1".into(), 8080))
        );
        assert_eq!(host_port("https://[::1]:9/"), Some(("::1".into(), 9)));
        assert_eq!(host_port("https://"), None);
    }

    #[test]
    fn revision_is_the_snapshot_directory() {
        assert_eq!(
            revision_of(Path::new(
                "/c/models--a--b/snapshots/0123abcdef/config.json"
            )),
            "0123abcdef"
        );
        assert_eq!(revision_of(Path::new("/tmp/x/config.json")), "main");
    }

    /// A hub cache laid out as hf-hub writes it, holding the fixture at
    /// commit `commit`, its weights in `blobs/<SHA-256>`.
    fn fake_cache(root: &Path, commit: &str) -> PathBuf {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/tiny-distilbert-sst2");
        let repo = root.join("models--org--tiny");
        let snapshot = repo.join("snapshots").join(commit);
        std::fs::create_dir_all(&snapshot).expect("mkdir");
        std::fs::create_dir_all(repo.join("blobs")).expect("mkdir");
        for f in ["config.json", "tokenizer.json"] {
            std::fs::copy(fixture.join(f), snapshot.join(f)).expect("copy");
        }
        let weights = std::fs::read(fixture.join("model.safetensors")).expect("weights");
        let sha: String = ring::digest::digest(&ring::digest::SHA256, &weights)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let blob = repo.join("blobs").join(&sha);
        std::fs::write(&blob, &weights).expect("blob");
        std::os::unix::fs::symlink(
            format!("../../blobs/{sha}"),
            snapshot.join("model.safetensors"),
        )
        .expect("link");
        blob
    }

    #[test]
    fn a_pinned_commit_is_read_from_its_snapshot_and_an_altered_blob_is_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let commit = "714eb0fa89d2f80546fda750413ed43d93601a13";
        let blob = fake_cache(root.path(), commit);
        let files = fetch(
            "org/tiny",
            Some(commit),
            Some(root.path()),
            Some("http://127.0.0.1:9"),
        )
        .expect("the pinned files, from the cache");
        assert_eq!(files.revision, commit);
        // Another commit is not in the cache (and the endpoint is dead).
        let other = "0000000000000000000000000000000000000000";
        assert!(
            fetch(
                "org/tiny",
                Some(other),
                Some(root.path()),
                Some("http://127.0.0.1:9")
            )
            .is_err()
        );
        // One byte changed in the blob: its content no longer has the hub's hash.
        let mut bytes = std::fs::read(&blob).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&blob, bytes).expect("write");
        let e = fetch(
            "org/tiny",
            Some(commit),
            Some(root.path()),
            Some("http://127.0.0.1:9"),
        )
        .expect_err("an altered blob");
        assert!(e.contains("does not match the hub's SHA-256"), "{e}");
    }
}
