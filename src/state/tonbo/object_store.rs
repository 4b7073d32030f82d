//! A Tonbo store on an S3-compatible object store: `fintech.state_path = 's3://bucket/prefix'`.
//!
//! The prefix holds what a state directory holds ([`super`]), as objects: the layout marker
//! `FINTECH_TONBO`, `meta/` and `states/<n>/`, each a Tonbo table whose manifest, write-ahead
//! log and Parquet files are objects under it. There is no `LOCK`: an object store has no lock
//! a killed process lets go of, so one writer per prefix is the user's to keep (README).
//!
//! The endpoint, region and credentials come from the `fintech.s3.*` settings, or else from
//! the usual AWS environment variables.

use datafusion::error::{DataFusionError, Result};
use fusio::fs::{CasCondition, Fs, FsCas};
use fusio::impls::remotes::aws::credential::AwsCredential;
use fusio::impls::remotes::aws::fs::{AmazonS3, AmazonS3Builder};
use fusio::path::Path;
use futures::TryStreamExt;

use super::directory::LAYOUT;
use crate::config::FintechConfig;
use crate::state::TONBO_MARKER;

/// The scheme of a `fintech.state_path` on an object store.
pub(super) const SCHEME: &str = "s3://";

/// A prefix of a bucket, and the client that reaches it.
#[derive(Clone)]
pub(super) struct S3Prefix {
    /// `s3://bucket/prefix`, as errors name it.
    pub(super) url: String,
    /// The endpoint (empty: AWS's own), which with `url` names the store within the process.
    pub(super) endpoint: String,
    pub(super) fs: AmazonS3,
    pub(super) root: Path,
}

/// The first of `setting` (a `fintech.s3.*` value) and the environment variables `vars`
/// that is set.
fn setting_or_env(setting: &str, vars: &[&str]) -> Option<String> {
    if !setting.is_empty() {
        return Some(setting.to_string());
    }
    vars.iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
}

impl S3Prefix {
    /// The prefix `url` (`s3://bucket/prefix`) names, reached with the session's settings.
    pub(super) fn new(url: &str, settings: &FintechConfig) -> Result<Self> {
        let rest = &url[SCHEME.len()..];
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(DataFusionError::Configuration(format!(
                "fintech.state_path '{url}' names no bucket: expected s3://bucket/prefix"
            )));
        }
        let prefix = prefix.trim_matches('/');
        let root = Path::parse(prefix).map_err(|e| {
            DataFusionError::Configuration(format!(
                "fintech.state_path '{url}' is not a usable object prefix: {e}"
            ))
        })?;
        let s3 = &settings.s3;
        let missing = |what: &str, setting: &str, var: &str| {
            DataFusionError::Configuration(format!(
                "fintech.state_path '{url}' needs the {what} of its object store: set \
                 fintech.s3.{setting} or the environment variable {var}"
            ))
        };
        let key_id = setting_or_env(&s3.access_key_id, &["AWS_ACCESS_KEY_ID"])
            .ok_or_else(|| missing("access key", "access_key_id", "AWS_ACCESS_KEY_ID"))?;
        let secret_key = setting_or_env(&s3.secret_access_key, &["AWS_SECRET_ACCESS_KEY"])
            .ok_or_else(|| missing("secret key", "secret_access_key", "AWS_SECRET_ACCESS_KEY"))?;
        let token = setting_or_env(&s3.session_token, &["AWS_SESSION_TOKEN"]);
        let region = setting_or_env(&s3.region, &["AWS_REGION", "AWS_DEFAULT_REGION"])
            .unwrap_or_else(|| "us-east-1".into());
        let endpoint = setting_or_env(&s3.endpoint, &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])
            .unwrap_or_default();
        let mut builder = AmazonS3Builder::new(bucket.to_string())
            .region(region)
            .credential(AwsCredential {
                key_id,
                secret_key,
                token,
            });
        if !endpoint.is_empty() {
            builder = builder.endpoint(endpoint.clone());
        }
        Ok(Self {
            url: if prefix.is_empty() {
                format!("{SCHEME}{bucket}")
            } else {
                format!("{SCHEME}{bucket}/{prefix}")
            },
            endpoint,
            fs: builder.build(),
            root,
        })
    }

    /// The path of `name` (`meta`, `states/3`, a file; empty: the prefix) under the prefix.
    pub(super) fn path(&self, name: &str) -> Path {
        name.split('/')
            .filter(|part| !part.is_empty())
            .fold(self.root.clone(), |p, part| p.child(part))
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> DataFusionError {
        DataFusionError::Execution(format!("cannot {what} {}: {}", self.url, condensed(&e)))
    }

    /// The objects under `name` (all under the prefix if empty).
    async fn objects(&self, name: &str) -> Result<Vec<Path>> {
        let under = self.path(name);
        let listed: Vec<_> = self
            .fs
            .list(&under)
            .await
            .map_err(|e| self.error("list", e))?
            .try_collect()
            .await
            .map_err(|e| self.error("list", e))?;
        // A listing is by string prefix: `states/1` lists `states/10/...` too.
        Ok(listed
            .into_iter()
            .map(|m| m.path)
            .filter(|p| p != &under && p.prefix_matches(&under))
            .collect())
    }

    /// Checks what the prefix holds before anything is written to it (nothing, or a Tonbo
    /// store of this layout), then writes the layout marker if it has none.
    pub(super) async fn check_and_mark(&self) -> Result<()> {
        let marker = self.path(TONBO_MARKER);
        match self
            .fs
            .load_with_tag(&marker)
            .await
            .map_err(|e| self.error("read", e))?
        {
            Some((layout, _)) => {
                let layout = String::from_utf8_lossy(&layout);
                if layout.trim_end() != LAYOUT {
                    return Err(DataFusionError::Execution(format!(
                        "state prefix {} has layout '{}', this build reads '{LAYOUT}'; nothing \
                         was changed",
                        self.url,
                        layout.trim_end()
                    )));
                }
                Ok(())
            }
            None => {
                if !self.objects("").await?.is_empty() {
                    return Err(DataFusionError::Execution(format!(
                        "{} is not a datafusion-fintech state prefix (it holds objects but no \
                         Tonbo store); refusing to write into it",
                        self.url
                    )));
                }
                let created = self
                    .fs
                    .put_conditional(
                        &marker,
                        format!("{LAYOUT}\n").as_bytes(),
                        Some("text/plain"),
                        None,
                        CasCondition::IfNotExists,
                    )
                    .await;
                match created {
                    Ok(_) => Ok(()),
                    // Another process created it first: it holds the same layout.
                    Err(e) if e.to_string().to_lowercase().contains("precondition") => Ok(()),
                    Err(e) => Err(self.error("write the layout marker of", e)),
                }
            }
        }
    }

    /// Deletes every object under `name`.
    pub(super) async fn remove_all(&self, name: &str) -> Result<()> {
        for path in self.objects(name).await? {
            self.fs
                .remove(&path)
                .await
                .map_err(|e| self.error(&format!("delete {path} of"), e))?;
        }
        Ok(())
    }
}

/// An error of the object store, with an S3 error document's code and message in place of the
/// document.
pub(super) fn condensed(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let len = text[start..].find(&format!("</{name}>"))?;
        Some(text[start..start + len].to_string())
    };
    match (text.find("body: <?xml"), tag("Code"), tag("Message")) {
        (Some(body), Some(code), Some(message)) => {
            format!("{}{code}: {message}", &text[..body])
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(key: &str, secret: &str) -> FintechConfig {
        let mut s = FintechConfig::default();
        s.s3.access_key_id = key.into();
        s.s3.secret_access_key = secret.into();
        s.s3.endpoint = "http://127.0.0.1:1".into();
        s
    }

    #[test]
    fn urls_name_a_bucket_and_a_prefix() {
        let p = S3Prefix::new("s3://bucket/a/b/", &settings("k", "s")).unwrap();
        assert_eq!(p.url, "s3://bucket/a/b");
        assert_eq!(p.path("states/3").to_string(), "a/b/states/3");
        let p = S3Prefix::new("s3://bucket", &settings("k", "s")).unwrap();
        assert_eq!(p.url, "s3://bucket");
        assert_eq!(p.path("meta").to_string(), "meta");
        assert_eq!(p.path(""), p.root);
        let e = S3Prefix::new("s3:///x", &settings("k", "s")).err().unwrap();
        assert!(e.to_string().contains("names no bucket"), "{e}");
    }

    #[test]
    fn missing_credentials_name_the_setting_and_the_variable() {
        if std::env::var_os("AWS_SECRET_ACCESS_KEY").is_some() {
            return;
        }
        let e = S3Prefix::new("s3://bucket/p", &settings("k", ""))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("fintech.s3.secret_access_key"), "{e}");
        assert!(e.contains("AWS_SECRET_ACCESS_KEY"), "{e}");
    }

    #[test]
    fn s3_error_documents_are_condensed() {
        let e = "HTTP request failed, status: 404 Not Found, body: <?xml version=\"1.0\"?>\
                 <Error><Code>NoSuchBucket</Code><Message>The specified bucket does not \
                 exist</Message><RequestId>x</RequestId></Error>";
        assert_eq!(
            condensed(&e),
            "HTTP request failed, status: 404 Not Found, NoSuchBucket: The specified bucket \
             does not exist"
        );
        assert_eq!(condensed(&"plain"), "plain");
    }
}
