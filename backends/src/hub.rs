//! Hugging Face Hub ids (`org/name`): finding a model's files in the local Hub cache, and
//! downloading what is missing when the network may be used: `hf-hub` probes the repository,
//! and each file is fetched with read timeouts and a stall limit into a temporary name that is
//! synced and renamed only once complete, so a partial download is never taken for a file.
//!
//! The cache layout is the one `huggingface_hub` (Python) and `hf-hub` share:
//! `<cache>/models--org--name/refs/<revision>` holds a commit hash, and the files of that commit
//! are under `<cache>/models--org--name/snapshots/<commit>/`. A revision that is itself a commit
//! hash names its snapshot directly.
//!
//! The cache is always consulted first, so a cached model loads without touching the network.
//! Environment variables are read only by [`HubCache::from_env`]; everything else takes the
//! folder and the offline flag explicitly, which keeps tests free of global state.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use api::runtime::RuntimeError;
use hf_hub::api::RepoInfo;
use hf_hub::api::sync::{ApiBuilder, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};
use serde_json::Value;

use crate::checkpoint::{INDEX_FILE, SINGLE_FILE};
use crate::error::InputError;
use crate::tokenizer::TOKENIZER_FILE;

/// The model config every Hub model must have.
const CONFIG_FILE: &str = "config.json";
/// Optional: transformers' generation defaults (EOS ids).
const GENERATION_CONFIG_FILE: &str = "generation_config.json";
/// The public Hub, when neither the caller nor `HF_ENDPOINT` names another.
const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Bound on establishing a connection to the Hub. `hf-hub` sets no timeouts on its own client,
/// so an unreachable network (packets dropped rather than refused) is detected by a probe with
/// these bounds before any download starts.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the whole probe request (resolve, connect, response, body).
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest a file download may go without receiving a byte (each socket read and write is
/// bounded by it) before it fails as stalled; see [`HubCache::with_stall_limit`].
pub const DEFAULT_STALL_LIMIT: Duration = Duration::from_secs(60);
/// Bound on waiting for a download's response headers.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Which files a load needs from a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Needed {
    /// `config.json` and `tokenizer.json`: enough for random weights.
    ConfigAndTokenizer,
    /// Those plus the safetensors weights (single file, or index and every shard).
    Everything,
}

/// The local Hugging Face Hub cache and whether the network may be used to fill it.
///
/// Build one with [`HubCache::from_env`] (what the binary does, honouring `HF_HUB_CACHE`,
/// `HF_HOME`, `HF_HUB_OFFLINE`, `HF_TOKEN` and `HF_ENDPOINT`) or explicitly with
/// [`HubCache::new`], and hand it to [`crate::BurnRuntime::with_hub_cache`].
#[derive(Clone, PartialEq, Eq)]
pub struct HubCache {
    dir: PathBuf,
    offline: bool,
    token: Option<String>,
    /// Read for a token when `token` is unset, only when going online.
    token_file: Option<PathBuf>,
    endpoint: Option<String>,
    /// A download receiving nothing for this long fails.
    stall_limit: Duration,
}

impl HubCache {
    /// A cache in `dir` (the folder holding `models--org--name` folders), online, without a
    /// token, using the public Hub.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            offline: false,
            token: None,
            token_file: None,
            endpoint: None,
            stall_limit: DEFAULT_STALL_LIMIT,
        }
    }

    /// Downloads fail once no byte has arrived for `limit` (default [`DEFAULT_STALL_LIMIT`]),
    /// and wait at most that long for a response; a stalled Hub cannot hang a study.
    pub fn with_stall_limit(mut self, limit: Duration) -> Self {
        self.stall_limit = limit;
        self
    }

    /// With `offline`, only the cache is consulted and the network is never touched.
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// The access token sent to the Hub (needed for gated models such as Meta's Llamas).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Another Hub endpoint (a mirror), instead of `https://huggingface.co`.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// The cache as `huggingface_hub` finds it: the folder is `$HF_HUB_CACHE`, else
    /// `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
    /// `~/.cache/huggingface/hub`; `HF_HUB_OFFLINE` set to 1/true/yes/on forbids the network;
    /// the token is `$HF_TOKEN`, else the file `$HF_HOME/token`; `HF_ENDPOINT` picks a mirror.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// [`HubCache::from_env`] with the environment given as a function, for tests.
    pub(crate) fn from_lookup(var: impl Fn(&str) -> Option<OsString>) -> Self {
        // Empty values count as unset, as in huggingface_hub.
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        let text = |name: &str| var(name).and_then(|v| v.into_string().ok());
        let home = var("HOME")
            .or_else(|| var("USERPROFILE"))
            .map(PathBuf::from);
        // huggingface_hub expands `~` in these variables.
        let path = |name: &str| {
            var(name).map(|v| {
                let p = PathBuf::from(v);
                match (p.strip_prefix("~"), &home) {
                    (Ok(rest), Some(h)) => h.join(rest),
                    _ => p,
                }
            })
        };
        let cache_home = path("XDG_CACHE_HOME").or_else(|| home.as_ref().map(|h| h.join(".cache")));
        let hf_home = path("HF_HOME").or_else(|| cache_home.map(|c| c.join("huggingface")));
        let dir = path("HF_HUB_CACHE")
            .or_else(|| path("HUGGINGFACE_HUB_CACHE"))
            .or_else(|| hf_home.as_ref().map(|h| h.join("hub")))
            // No home at all (some containers): a relative folder still gives a clear error.
            .unwrap_or_else(|| PathBuf::from(".cache/huggingface/hub"));
        let offline = text("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_uppercase().as_str(),
                "1" | "ON" | "YES" | "TRUE"
            )
        });
        Self {
            dir,
            offline,
            token: text("HF_TOKEN"),
            token_file: path("HF_TOKEN_PATH").or_else(|| hf_home.map(|h| h.join("token"))),
            endpoint: text("HF_ENDPOINT"),
            stall_limit: DEFAULT_STALL_LIMIT,
        }
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the network is off limits.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// `<cache>/models--org--name`.
    fn repo_dir(&self, id: &str) -> PathBuf {
        self.dir.join(format!("models--{}", id.replace('/', "--")))
    }

    /// The cached snapshot folder for `revision` of `id`, if the cache has one (complete or
    /// not). Never touches the network.
    pub(crate) fn cached_snapshot(
        &self,
        id: &str,
        revision: &str,
    ) -> Result<Option<PathBuf>, RuntimeError> {
        match self.local(id, revision, Needed::ConfigAndTokenizer)? {
            Local::NoRef { .. } | Local::NoSnapshot { .. } => Ok(None),
            Local::Incomplete { dir, .. } | Local::Complete(dir) => Ok(Some(dir)),
        }
    }

    /// The snapshot folder holding the files `needed` for `revision` of `id`: from the cache
    /// when it is complete there, else downloaded (unless offline).
    pub(crate) fn resolve(
        &self,
        id: &str,
        revision: &str,
        needed: Needed,
    ) -> Result<PathBuf, RuntimeError> {
        check_revision(revision)?;
        let local = match self.local(id, revision, needed)? {
            Local::Complete(dir) => return Ok(dir),
            other => other,
        };
        if self.offline {
            return Err(not_found(
                id,
                format!(
                    "it is not in the Hugging Face cache {} ({}), and offline mode (HF_HUB_OFFLINE) forbids downloading. {}",
                    self.dir.display(),
                    local.describe(revision),
                    fix_hint(id)
                ),
            ));
        }
        self.download(id, revision, needed, &local)
    }

    /// What the cache holds for `revision` of `id`.
    fn local(&self, id: &str, revision: &str, needed: Needed) -> Result<Local, RuntimeError> {
        check_revision(revision)?;
        let repo = self.repo_dir(id);
        let commit = if is_commit_hash(revision) {
            revision.to_string()
        } else {
            let ref_path = repo.join("refs").join(revision);
            match std::fs::read_to_string(&ref_path) {
                Ok(text) => {
                    let commit = text.trim();
                    if !is_commit_hash(commit) {
                        return Err(RuntimeError::InvalidModelFile {
                            path: ref_path.display().to_string(),
                            reason: format!(
                                "a Hub cache ref must hold a 40-digit commit hash, found `{commit}`"
                            ),
                        });
                    }
                    commit.to_string()
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(Local::NoRef { ref_path });
                }
                Err(e) => {
                    return Err(RuntimeError::InvalidModelFile {
                        path: ref_path.display().to_string(),
                        reason: format!("cannot read: {e}"),
                    });
                }
            }
        };
        let dir = repo.join("snapshots").join(&commit);
        if !dir.is_dir() {
            return Ok(Local::NoSnapshot { dir });
        }
        let missing = missing_files(&dir, needed);
        if missing.is_empty() {
            Ok(Local::Complete(dir))
        } else {
            Ok(Local::Incomplete { dir, missing })
        }
    }

    /// Fetches the missing files of `revision` into the cache. A bounded probe of the Hub comes
    /// first: it turns "no network" into a prompt error and pins the revision to one commit, so
    /// every file comes from the same snapshot even if the branch moves meanwhile.
    ///
    /// The files themselves are fetched by [`fetch`], not hf-hub's client (which has no timeouts
    /// and renames a short body into place as if complete).
    fn download(
        &self,
        id: &str,
        revision: &str,
        needed: Needed,
        local: &Local,
    ) -> Result<PathBuf, RuntimeError> {
        let endpoint = self.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT);
        let cache_note = format!(
            "it is not in the Hugging Face cache {} ({})",
            self.dir.display(),
            local.describe(revision)
        );
        let token: Option<String> = self.token.clone().or_else(|| {
            let text = std::fs::read_to_string(self.token_file.as_ref()?).ok()?;
            Some(text.trim().to_string()).filter(|t| !t.is_empty())
        });
        let api = ApiBuilder::from_cache(Cache::new(self.dir.clone()))
            .with_endpoint(endpoint.to_string())
            .with_token(token.clone())
            .with_progress(false)
            .build()
            .map_err(|e| not_found(id, format!("{cache_note}, and no Hub client: {e}")))?;
        let repo = api.repo(Repo::with_revision(
            id.to_string(),
            RepoType::Model,
            revision.to_string(),
        ));
        let info = probe(&repo).map_err(|problem| {
            not_found(
                id,
                format!(
                    "{cache_note}, and the Hub at {endpoint} {problem}. {}",
                    fix_hint(id)
                ),
            )
        })?;
        let commit = info.sha.trim().to_string();
        if !is_commit_hash(&commit) {
            return Err(not_found(
                id,
                format!("the Hub at {endpoint} answered with commit `{commit}`, not a hash"),
            ));
        }
        let listed: BTreeSet<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
        let mut files = plan_files(id, &listed, needed)?;
        let snapshot = self.repo_dir(id).join("snapshots").join(&commit);
        // Files are fetched by commit, not by branch name, for the reason above.
        let pinned = api.repo(Repo::with_revision(
            id.to_string(),
            RepoType::Model,
            commit.clone(),
        ));
        let commit_ref = self.repo_dir(id).join("refs").join(&commit);
        let had_commit_ref = commit_ref.exists();
        let mut i = 0;
        while i < files.len() {
            let file = files[i].clone();
            i += 1;
            if !snapshot.join(&file).is_file() {
                let url = pinned.url(&file);
                fetch(
                    &url,
                    token.as_deref(),
                    &snapshot.join(&file),
                    self.stall_limit,
                )
                .map_err(|e| not_found(id, format!("downloading {url} failed: {e}")))?;
            }
            if file == INDEX_FILE {
                files.extend(shard_names(&snapshot.join(INDEX_FILE))?);
            }
        }
        // hf-hub records the ref it downloaded by, here the commit itself; huggingface_hub
        // keeps only branch and tag refs, so a ref we created is removed again (best effort:
        // a leftover file is harmless) and the branch ref is written instead.
        if !had_commit_ref {
            let _ = std::fs::remove_file(&commit_ref);
        }
        if revision != commit {
            write_ref(&self.repo_dir(id), revision, &commit)?;
        }
        let missing = missing_files(&snapshot, needed);
        if !missing.is_empty() {
            return Err(not_found(
                id,
                format!(
                    "after downloading, {} still lacks {}",
                    snapshot.display(),
                    missing.join(", ")
                ),
            ));
        }
        Ok(snapshot)
    }
}

/// Written by hand so the access token never reaches logs.
impl std::fmt::Debug for HubCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubCache")
            .field("dir", &self.dir)
            .field("offline", &self.offline)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("endpoint", &self.endpoint)
            .field("stall_limit", &self.stall_limit)
            .finish()
    }
}

/// What the cache holds for one revision.
#[derive(Debug)]
enum Local {
    /// No ref file for a branch or tag name.
    NoRef { ref_path: PathBuf },
    /// The commit's snapshot folder does not exist.
    NoSnapshot { dir: PathBuf },
    /// The snapshot exists but lacks files.
    Incomplete { dir: PathBuf, missing: Vec<String> },
    /// Everything needed is there.
    Complete(PathBuf),
}

impl Local {
    /// Where the cache was looked at, for error messages.
    fn describe(&self, revision: &str) -> String {
        match self {
            Local::NoRef { ref_path } => format!(
                "no revision `{revision}`: {} does not exist",
                ref_path.display()
            ),
            Local::NoSnapshot { dir } => format!("{} does not exist", dir.display()),
            Local::Incomplete { dir, missing } => {
                format!("{} lacks {}", dir.display(), missing.join(", "))
            }
            Local::Complete(dir) => format!("{} is complete", dir.display()),
        }
    }
}

fn not_found(id: &str, reason: String) -> RuntimeError {
    RuntimeError::ModelNotFound {
        name: id.to_string(),
        reason,
    }
}

/// How to get a model into the cache by hand.
fn fix_hint(id: &str) -> String {
    format!(
        "Download it with `huggingface-cli download {id}` on a machine with network and copy the cache over, or set HF_HUB_CACHE (or HF_HOME) to a cache that holds it"
    )
}

/// True for a full 40-digit hexadecimal commit hash.
fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Refuses revisions that would leave `refs/` once used as a path.
fn check_revision(revision: &str) -> Result<(), RuntimeError> {
    let bad = revision.is_empty()
        || revision.starts_with('/')
        || revision.contains('\\')
        || revision.contains('\0')
        || revision
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(InputError::InvalidRevision {
            revision: revision.to_string(),
        }
        .into());
    }
    Ok(())
}

/// The names of the needed files that `dir` lacks (weights: a single file, or an index and
/// every shard it lists). An unreadable index counts as present: the checkpoint loader reports
/// what is wrong with it more precisely than "missing" would.
fn missing_files(dir: &Path, needed: Needed) -> Vec<String> {
    let mut missing: Vec<String> = [CONFIG_FILE, TOKENIZER_FILE]
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .map(str::to_string)
        .collect();
    if needed == Needed::Everything && !dir.join(SINGLE_FILE).is_file() {
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            if let Ok(shards) = shard_names(&index) {
                missing.extend(shards.into_iter().filter(|s| !dir.join(s).is_file()));
            }
        } else {
            missing.push(format!("{SINGLE_FILE} (or {INDEX_FILE})"));
        }
    }
    missing
}

/// Shard file names listed in a `model.safetensors.index.json`, each once, in order.
fn shard_names(index: &Path) -> Result<Vec<String>, RuntimeError> {
    let invalid = |reason: String| RuntimeError::InvalidModelFile {
        path: index.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(index).map_err(|e| invalid(format!("cannot read: {e}")))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("no `weight_map` object".into()))?;
    let mut names = BTreeSet::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| invalid(format!("shard of `{tensor}` is not a file name")))?;
        // Names come from a file we do not control; they become paths in the cache.
        if file.is_empty() || file.contains(['/', '\\']) || file == "." || file == ".." {
            return Err(invalid(format!(
                "shard name `{file}` for tensor `{tensor}` is not a plain file name"
            )));
        }
        names.insert(file.to_string());
    }
    Ok(names.into_iter().collect())
}

/// The files to fetch for a load, given what the repository lists. Shards are added once the
/// index is downloaded.
fn plan_files(
    id: &str,
    listed: &BTreeSet<&str>,
    needed: Needed,
) -> Result<Vec<String>, RuntimeError> {
    let lacks = |what: String| RuntimeError::ModelNotFound {
        name: id.to_string(),
        reason: format!("the Hub repository has no {what}"),
    };
    if !listed.contains(CONFIG_FILE) {
        return Err(lacks(format!(
            "{CONFIG_FILE}, so it is not a transformers model"
        )));
    }
    if !listed.contains(TOKENIZER_FILE) {
        return Err(lacks(format!(
            "{TOKENIZER_FILE} (slow tokenizers such as tokenizer.model alone are not supported)"
        )));
    }
    let mut files = vec![CONFIG_FILE.to_string(), TOKENIZER_FILE.to_string()];
    if listed.contains(GENERATION_CONFIG_FILE) {
        files.push(GENERATION_CONFIG_FILE.to_string());
    }
    if needed == Needed::Everything {
        if listed.contains(SINGLE_FILE) {
            files.push(SINGLE_FILE.to_string());
        } else if listed.contains(INDEX_FILE) {
            files.push(INDEX_FILE.to_string());
        } else {
            return Err(lacks(format!(
                "safetensors weights ({SINGLE_FILE} or {INDEX_FILE}); pytorch_model.bin is not supported"
            )));
        }
    }
    Ok(files)
}

/// Asks the Hub for the repository's commit and file list, within [`PROBE_TIMEOUT`]. The error
/// completes "the Hub at <endpoint> …".
fn probe(repo: &ApiRepo) -> Result<RepoInfo, ProbeError> {
    let response = repo
        .info_request()
        .config()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(PROBE_TIMEOUT))
        .build()
        .call();
    match response {
        Ok(mut response) => response
            .body_mut()
            .read_json::<RepoInfo>()
            .map_err(|e| ProbeError::Unreadable(Box::new(e))),
        Err(ureq::Error::StatusCode(401 | 403)) => Err(ProbeError::Refused),
        Err(ureq::Error::StatusCode(404)) => Err(ProbeError::NoSuchRepo),
        Err(e) => Err(ProbeError::Unreachable(Box::new(e))),
    }
}

/// Why [`probe`] failed; each message completes "the Hub at <endpoint> …".
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    /// The answer was not the repository info expected.
    #[error("sent an unreadable answer ({0})")]
    Unreadable(Box<ureq::Error>),
    /// 401 or 403.
    #[error(
        "refused access: the model is gated or private (accept its licence on the Hub and set HF_TOKEN or run `huggingface-cli login`)"
    )]
    Refused,
    /// 404.
    #[error("has no such model or revision (check the id and the revision)")]
    NoSuchRepo,
    /// No answer, or another error status.
    #[error("could not be reached ({0})")]
    Unreachable(Box<ureq::Error>),
}

/// Why a file download failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// The server answered with an error status.
    #[error("the server answered HTTP {0}")]
    Status(u16),
    /// No byte arrived for the stall limit.
    #[error("no data for {limit_s} s after {received} bytes (stalled)")]
    Stalled {
        /// The stall limit, seconds.
        limit_s: f64,
        /// Bytes received before it stalled.
        received: u64,
    },
    /// The body ended before the length the server announced.
    #[error("the transfer ended after {received} of {expected} bytes")]
    Incomplete {
        /// Bytes received.
        received: u64,
        /// Bytes announced by `Content-Length`.
        expected: u64,
    },
    /// Connecting, the request or writing the file failed otherwise.
    #[error("{0}")]
    Io(String),
}

/// Downloads `url` to `dest`: into a temporary name beside it, synced, then renamed, so `dest`
/// exists only complete. Every socket read and write is bounded by `stall_limit`, and so is
/// the wait for the response; a failed transfer leaves no file behind.
pub(crate) fn fetch(
    url: &str,
    token: Option<&str>,
    dest: &Path,
    stall_limit: Duration,
) -> Result<u64, FetchError> {
    let io = |what: &str, e: &dyn std::fmt::Display| FetchError::Io(format!("{what}: {e}"));
    let dir = dest
        .parent()
        .ok_or_else(|| FetchError::Io(format!("{} has no folder", dest.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| io("creating the snapshot folder", &e))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Hidden, and named by process so two processes fetching the same file do not share one.
    let part = dir.join(format!(".{name}.{}.llmeff-part", std::process::id()));
    sweep_dead_parts(dir, &name, stall_limit, &|pid| {
        Path::new("/proc").join(pid.to_string()).exists() || !Path::new("/proc/self").exists()
    });
    let result = transfer(url, token, &part, stall_limit).and_then(|received| {
        std::fs::rename(&part, dest).map_err(|e| io("moving the download into place", &e))?;
        // The rename is durable only once the folder is synced (best effort: not every
        // filesystem can sync a folder).
        if let Ok(folder) = std::fs::File::open(dir) {
            let _ = folder.sync_all();
        }
        Ok(received)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

/// Removes the temporary files earlier fetches of `name` into `dir` left when their process
/// was killed mid-download (a failed fetch removes its own). A temporary is taken for dead only
/// when the process its name carries is gone (`alive`; on another host sharing the cache it
/// looks gone too) and it has not been written for three stall limits, longer than a live
/// transfer, which fails once no byte arrives for one, can go without writing.
fn sweep_dead_parts(dir: &Path, name: &str, stall_limit: Duration, alive: &dyn Fn(u32) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".llmeff-part"))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let idle = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok());
        if pid != std::process::id()
            && !alive(pid)
            && idle.is_some_and(|idle| idle > stall_limit * 3)
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether a read failed on a timeout: the socket's own, or ureq's wrapped in an I/O error.
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    ) || e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|inner| matches!(inner, ureq::Error::Timeout(_)))
}

/// The GET of [`fetch`] into `part`, synced; the bytes received.
fn transfer(
    url: &str,
    token: Option<&str>,
    part: &Path,
    stall_limit: Duration,
) -> Result<u64, FetchError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT.min(stall_limit)))
        .timeout_recv_response(Some(RESPONSE_TIMEOUT.min(stall_limit)))
        .timeout_per_read(Some(stall_limit))
        .timeout_per_write(Some(stall_limit))
        .build()
        .into();
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let stalled = |received| FetchError::Stalled {
        limit_s: stall_limit.as_secs_f64(),
        received,
    };
    let response = request.call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => FetchError::Status(code),
        ureq::Error::Timeout(_) => stalled(0),
        other => FetchError::Io(other.to_string()),
    })?;
    let expected = response.body().content_length();
    let mut reader = response.into_body().into_reader();
    let mut file = std::fs::File::create(part)
        .map_err(|e| FetchError::Io(format!("creating {}: {e}", part.display())))?;
    let mut buffer = vec![0u8; 1 << 16];
    let mut received = 0u64;
    loop {
        let n = match std::io::Read::read(&mut reader, &mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => return Err(stalled(received)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(FetchError::Incomplete {
                    received,
                    expected: expected.unwrap_or(received),
                });
            }
            Err(e) => return Err(FetchError::Io(format!("reading the response: {e}"))),
        };
        std::io::Write::write_all(&mut file, &buffer[..n])
            .map_err(|e| FetchError::Io(format!("writing {}: {e}", part.display())))?;
        received += n as u64;
    }
    if let Some(expected) = expected
        && received != expected
    {
        return Err(FetchError::Incomplete { received, expected });
    }
    file.sync_all()
        .map_err(|e| FetchError::Io(format!("syncing {}: {e}", part.display())))?;
    Ok(received)
}

/// Records `commit` as what `revision` (a branch or tag, possibly with `/`) points to.
fn write_ref(repo_dir: &Path, revision: &str, commit: &str) -> Result<(), RuntimeError> {
    let path = repo_dir.join("refs").join(revision);
    let fail = |e: std::io::Error| RuntimeError::InvalidModelFile {
        path: path.display().to_string(),
        reason: format!("cannot write the Hub cache ref: {e}"),
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    std::fs::write(&path, commit).map_err(fail)
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_parts_of_dead_processes_idle_past_the_stall_limits_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let limit = Duration::from_secs(60);
        let old = std::time::SystemTime::now() - Duration::from_secs(600);
        let part = |pid: u32, idle: bool| {
            let path = dir
                .path()
                .join(format!(".model.safetensors.{pid}.llmeff-part"));
            let file = std::fs::File::create(&path).unwrap();
            if idle {
                file.set_modified(old).unwrap();
            }
            path
        };
        let dead_idle = part(11, true);
        let dead_fresh = part(12, false);
        let alive_idle = part(13, true);
        let own_idle = part(std::process::id(), true);
        let other_file = dir.path().join(".config.json.11.llmeff-part");
        std::fs::File::create(&other_file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        sweep_dead_parts(dir.path(), "model.safetensors", limit, &|pid| pid == 13);
        assert!(!dead_idle.exists(), "a dead process's idle part is swept");
        assert!(
            dead_fresh.exists(),
            "a part written lately may be another host's live one"
        );
        assert!(alive_idle.exists(), "a live process's part is left to it");
        assert!(own_idle.exists(), "this process's own part is left");
        assert!(
            other_file.exists(),
            "only parts of the file being fetched are looked at"
        );
    }
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn cache_folder_follows_huggingface_hub_precedence() {
        let home = [("HOME", "/home/u")];
        let c = HubCache::from_lookup(env(&home));
        assert_eq!(c.dir(), Path::new("/home/u/.cache/huggingface/hub"));
        assert!(!c.is_offline());
        assert_eq!(
            c.token_file.as_deref(),
            Some(Path::new("/home/u/.cache/huggingface/token"))
        );

        let c = HubCache::from_lookup(env(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/xdg")]));
        assert_eq!(c.dir(), Path::new("/xdg/huggingface/hub"));

        let c = HubCache::from_lookup(env(&[("HOME", "/home/u"), ("HF_HOME", "~/hf")]));
        assert_eq!(c.dir(), Path::new("/home/u/hf/hub"));
        assert_eq!(c.token_file.as_deref(), Some(Path::new("/home/u/hf/token")));

        let c = HubCache::from_lookup(env(&[
            ("HOME", "/home/u"),
            ("HF_HOME", "/hf"),
            ("HF_HUB_CACHE", "/cache"),
            ("HUGGINGFACE_HUB_CACHE", "/legacy"),
        ]));
        assert_eq!(c.dir(), Path::new("/cache"));
        let c = HubCache::from_lookup(env(&[
            ("HF_HOME", "/hf"),
            ("HUGGINGFACE_HUB_CACHE", "/legacy"),
        ]));
        assert_eq!(c.dir(), Path::new("/legacy"));
        // Empty means unset.
        let c = HubCache::from_lookup(env(&[("HOME", "/h"), ("HF_HUB_CACHE", "")]));
        assert_eq!(c.dir(), Path::new("/h/.cache/huggingface/hub"));
    }

    #[test]
    fn offline_token_and_endpoint_come_from_the_environment() {
        for (value, offline) in [
            ("1", true),
            ("true", true),
            ("YES", true),
            ("on", true),
            ("0", false),
            ("no", false),
        ] {
            let c = HubCache::from_lookup(env(&[("HF_HUB_OFFLINE", value)]));
            assert_eq!(c.is_offline(), offline, "HF_HUB_OFFLINE={value}");
        }
        let c = HubCache::from_lookup(env(&[
            ("HF_TOKEN", "hf_x"),
            ("HF_ENDPOINT", "http://mirror"),
        ]));
        assert_eq!(c.token.as_deref(), Some("hf_x"));
        assert_eq!(c.endpoint.as_deref(), Some("http://mirror"));
        assert!(
            !format!("{c:?}").contains("hf_x"),
            "the token must not be printed"
        );
    }

    #[test]
    fn revisions_that_escape_refs_are_refused() {
        for bad in ["", "../x", "a/../b", "/abs", "a//b", "a\\b"] {
            assert!(check_revision(bad).is_err(), "{bad:?}");
        }
        for good in ["main", "v1.0", "refs/pr/1", COMMIT] {
            assert!(check_revision(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn refs_and_commit_revisions_find_the_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = HubCache::new(tmp.path()).offline(true);
        let repo = tmp.path().join("models--org--m");
        let snap = repo.join("snapshots").join(COMMIT);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        // Python writes refs without a newline; tolerate one anyway.
        std::fs::write(repo.join("refs/main"), format!("{COMMIT}\n")).unwrap();
        assert_eq!(
            cache.cached_snapshot("org/m", "main").unwrap(),
            Some(snap.clone())
        );
        assert_eq!(
            cache.cached_snapshot("org/m", COMMIT).unwrap(),
            Some(snap.clone())
        );
        assert_eq!(cache.cached_snapshot("org/m", "dev").unwrap(), None);

        // Incomplete for a load until the files are there.
        match cache.resolve("org/m", "main", Needed::ConfigAndTokenizer) {
            Err(RuntimeError::ModelNotFound { reason, .. }) => {
                assert!(
                    reason.contains("config.json") && reason.contains("tokenizer.json"),
                    "{reason}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        std::fs::write(snap.join("tokenizer.json"), "{}").unwrap();
        assert_eq!(
            cache
                .resolve("org/m", "main", Needed::ConfigAndTokenizer)
                .unwrap(),
            snap
        );
        assert!(cache.resolve("org/m", "main", Needed::Everything).is_err());

        // A sharded checkpoint needs every shard.
        let index =
            serde_json::json!({"weight_map": {"a": "s-1.safetensors", "b": "s-2.safetensors"}});
        std::fs::write(snap.join(INDEX_FILE), index.to_string()).unwrap();
        std::fs::write(snap.join("s-1.safetensors"), "").unwrap();
        assert_eq!(
            missing_files(&snap, Needed::Everything),
            vec!["s-2.safetensors".to_string()]
        );
        std::fs::write(snap.join("s-2.safetensors"), "").unwrap();
        assert_eq!(
            cache.resolve("org/m", "main", Needed::Everything).unwrap(),
            snap
        );

        // A ref that is not a hash is a broken cache file.
        std::fs::write(repo.join("refs/main"), "nonsense").unwrap();
        assert!(matches!(
            cache.cached_snapshot("org/m", "main"),
            Err(RuntimeError::InvalidModelFile { .. })
        ));
    }

    #[test]
    fn shard_names_must_be_plain() {
        let tmp = tempfile::tempdir().unwrap();
        let index = tmp.path().join(INDEX_FILE);
        std::fs::write(&index, r#"{"weight_map": {"a": "../evil"}}"#).unwrap();
        assert!(shard_names(&index).is_err());
        std::fs::write(&index, r#"{"weight_map": {"a": "x", "b": "x", "c": "y"}}"#).unwrap();
        assert_eq!(shard_names(&index).unwrap(), vec!["x", "y"]);
    }

    #[test]
    fn file_plans_follow_the_repository_listing() {
        let listed: BTreeSet<&str> = ["config.json", "tokenizer.json", INDEX_FILE].into();
        assert_eq!(
            plan_files("o/m", &listed, Needed::Everything).unwrap(),
            vec!["config.json", "tokenizer.json", INDEX_FILE]
        );
        assert_eq!(
            plan_files("o/m", &listed, Needed::ConfigAndTokenizer).unwrap(),
            vec!["config.json", "tokenizer.json"]
        );
        let bin_only: BTreeSet<&str> =
            ["config.json", "tokenizer.json", "pytorch_model.bin"].into();
        assert!(plan_files("o/m", &bin_only, Needed::Everything).is_err());
        let no_tokenizer: BTreeSet<&str> = ["config.json", "tokenizer.model"].into();
        assert!(plan_files("o/m", &no_tokenizer, Needed::ConfigAndTokenizer).is_err());
    }
}
