//! Tags: TagResource, UntagResource, ListTagsForResource on clusters, services, task
//! definitions and capacity providers. Tags live in the resource's own document (`tags`, as
//! ECS returns them), changed with compare-and-swap so a concurrent edit is never lost.

use capstan_core::Tag;
use serde_json::Map;

use super::*;

/// Most tags on one resource (ECS's limit).
const MAX_TAGS: usize = 50;

/// What an ARN names, as far as tags go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tagged {
    Cluster(String),
    Service { cluster: String, name: String },
    TaskDefinition { family: String, revision: u32 },
    CapacityProvider(String),
}

/// Parses `arn:<partition>:ecs:<region>:<account>:<type>/<id…>` (Capstan's or AWS's).
fn tagged(resource_arn: &str) -> ApiResult<Tagged> {
    let bad = |why: &str| {
        ApiError::invalid(format!(
            "resourceArn {resource_arn:?} {why}; Capstan tags clusters, services, task definitions and capacity providers"
        ))
    };
    let resource = resource_arn
        .strip_prefix("arn:")
        .and_then(|rest| rest.splitn(5, ':').nth(4))
        .ok_or_else(|| bad("is not an ARN"))?;
    let (kind, id) = resource
        .split_once('/')
        .ok_or_else(|| bad("names no resource"))?;
    let parts: Vec<&str> = id.split('/').collect();
    let named = |s: &str| !s.is_empty();
    match (kind, parts.as_slice()) {
        ("cluster", [c]) if named(c) => Ok(Tagged::Cluster((*c).into())),
        ("service", [c, s]) if named(c) && named(s) => Ok(Tagged::Service {
            cluster: (*c).into(),
            name: (*s).into(),
        }),
        // The old ARN format without the cluster: the default cluster's.
        ("service", [s]) if named(s) => Ok(Tagged::Service {
            cluster: DEFAULT_CLUSTER.into(),
            name: (*s).into(),
        }),
        ("task-definition", [fr]) => match fr.split_once(':') {
            Some((f, r)) if named(f) => r
                .parse()
                .map(|revision| Tagged::TaskDefinition {
                    family: f.into(),
                    revision,
                })
                .map_err(|_| bad("has no valid revision")),
            _ => Err(bad("has no revision")),
        },
        ("capacity-provider", [n]) if named(n) => Ok(Tagged::CapacityProvider((*n).into())),
        _ => Err(bad("is not a resource that takes tags")),
    }
}

/// Checks tags as ECS does: keys 1–128 characters, values up to 256, no `aws:` keys.
fn check_tags(tags: &[Tag]) -> ApiResult<()> {
    for t in tags {
        if t.key.is_empty() || t.key.chars().count() > 128 {
            return Err(ApiError::invalid(format!(
                "tag key {:?} must have 1-128 characters",
                t.key
            )));
        }
        if t.value.chars().count() > 256 {
            return Err(ApiError::invalid(format!(
                "the value of tag {:?} must have at most 256 characters",
                t.key
            )));
        }
        if t.key.to_ascii_lowercase().starts_with("aws:") {
            return Err(ApiError::invalid(format!(
                "tag key {:?}: keys starting with aws: are reserved",
                t.key
            )));
        }
    }
    Ok(())
}

/// `tags` with `add` set (replacing values of the same keys) and `remove` gone.
pub(crate) fn merged_tags(tags: &[Tag], add: &[Tag], remove: &[String]) -> Vec<Tag> {
    let mut out: Vec<Tag> = tags
        .iter()
        .filter(|t| !remove.contains(&t.key) && !add.iter().any(|a| a.key == t.key))
        .cloned()
        .collect();
    out.extend(add.iter().cloned());
    out
}

impl Api {
    fn tagged_key(&self, t: &Tagged) -> String {
        match t {
            Tagged::Cluster(c) => self.keys().cluster(c),
            Tagged::Service { cluster, name } => self.keys().service(cluster, name),
            Tagged::TaskDefinition { family, revision } => {
                self.keys().task_definition(family, *revision)
            }
            Tagged::CapacityProvider(n) => self.keys().capacity_provider(n),
        }
    }

    fn not_found(t: &Tagged) -> ApiError {
        match t {
            Tagged::Cluster(c) => ApiError::cluster_not_found(c),
            Tagged::Service { cluster, name } => ApiError::service_not_found(cluster, name),
            Tagged::TaskDefinition { family, revision } => ApiError::new(
                Exception::Client,
                format!("Unable to describe task definition {family}:{revision}."),
            ),
            Tagged::CapacityProvider(n) => ApiError::new(
                Exception::Client,
                format!("The specified capacity provider {n} does not exist."),
            ),
        }
    }

    /// The resource's document and its tags.
    async fn tagged_doc(&self, t: &Tagged) -> ApiResult<(Map<String, Value>, Vec<Tag>, i64)> {
        let key = self.tagged_key(t);
        let Some(kv) = self.store.get(&key).await? else {
            return Err(Self::not_found(t));
        };
        let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(&kv.value) else {
            return Err(ApiError::new(
                Exception::Server,
                format!("{key} is not a JSON object; fix it with etcdctl"),
            ));
        };
        let tags = match doc.get("tags") {
            None | Some(Value::Null) => vec![],
            Some(v) => serde_json::from_value::<Vec<Tag>>(v.clone()).map_err(|e| {
                ApiError::new(
                    Exception::Server,
                    format!("{key}: its tags cannot be read ({e}); fix them with etcdctl"),
                )
            })?,
        };
        Ok((doc, tags, kv.mod_revision))
    }

    /// Adds `add` and removes `remove` on the resource `resource_arn` names.
    async fn retag(&self, resource_arn: &str, add: &[Tag], remove: &[String]) -> ApiResult<()> {
        check_tags(add)?;
        let t = tagged(resource_arn)?;
        let key = self.tagged_key(&t);
        for _ in 0..CAS_ATTEMPTS {
            let (mut doc, tags, rev) = self.tagged_doc(&t).await?;
            let next = merged_tags(&tags, add, remove);
            if next.len() > MAX_TAGS {
                return Err(ApiError::invalid(format!(
                    "a resource takes at most {MAX_TAGS} tags; this would make {}",
                    next.len()
                )));
            }
            if next.is_empty() {
                doc.remove("tags");
            } else {
                doc.insert("tags".into(), json!(next));
            }
            let w = Write::new()
                .put_json(&key, &Value::Object(doc))
                .if_unchanged(&key, rev);
            if committed(self.store.commit(w, None).await)? {
                return Ok(());
            }
        }
        Err(busy("the resource"))
    }

    /// TagResource.
    pub async fn tag_resource(&self, req: pb::TagResourceRequest) -> ApiResult<pb::TagsResponse> {
        let add: Vec<Tag> = serde_json::from_str(&req.tags_json).map_err(|e| {
            ApiError::invalid(format!("tags must be a list of {{key, value}}: {e}"))
        })?;
        if add.is_empty() {
            return Err(ApiError::invalid("tags must name at least one tag"));
        }
        self.retag(&req.resource_arn, &add, &[]).await?;
        Ok(pb::TagsResponse::default())
    }

    /// UntagResource.
    pub async fn untag_resource(
        &self,
        req: pb::UntagResourceRequest,
    ) -> ApiResult<pb::TagsResponse> {
        if req.tag_keys.is_empty() {
            return Err(ApiError::invalid("tagKeys must name at least one key"));
        }
        self.retag(&req.resource_arn, &[], &req.tag_keys).await?;
        Ok(pb::TagsResponse::default())
    }

    /// ListTagsForResource.
    pub async fn list_tags_for_resource(
        &self,
        req: pb::ListTagsForResourceRequest,
    ) -> ApiResult<pb::TagsResponse> {
        let t = tagged(&req.resource_arn)?;
        let (_, tags, _) = self.tagged_doc(&t).await?;
        Ok(pb::TagsResponse {
            tags_json: to_json(&tags),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(k: &str, v: &str) -> Tag {
        Tag {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn arns_of_either_partition_name_what_they_tag() {
        let cases = [
            (
                "arn:capstan:ecs:local:000000000000:cluster/prod",
                Tagged::Cluster("prod".into()),
            ),
            (
                "arn:aws:ecs:eu-west-3:123456789012:service/prod/web",
                Tagged::Service {
                    cluster: "prod".into(),
                    name: "web".into(),
                },
            ),
            (
                "arn:aws:ecs:us-east-1:1:service/web",
                Tagged::Service {
                    cluster: "default".into(),
                    name: "web".into(),
                },
            ),
            (
                "arn:capstan:ecs:local:000000000000:task-definition/web:12",
                Tagged::TaskDefinition {
                    family: "web".into(),
                    revision: 12,
                },
            ),
            (
                "arn:aws:ecs:us-east-1:1:capacity-provider/spot",
                Tagged::CapacityProvider("spot".into()),
            ),
        ];
        for (arn, want) in cases {
            assert_eq!(tagged(arn).expect(arn), want);
        }
        for bad in [
            "cluster/prod",
            "arn:aws:ecs:us-east-1:1:task/prod/abc",
            "arn:aws:ecs:us-east-1:1:task-definition/web",
            "arn:aws:ecs:us-east-1:1:task-definition/web:x",
            "arn:aws:ecs:us-east-1:1:cluster/",
        ] {
            assert!(tagged(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_merge_by_key_and_are_checked() {
        let have = [tag("team", "a"), tag("env", "dev")];
        let next = merged_tags(&have, &[tag("env", "prod"), tag("cost", "1")], &[]);
        assert_eq!(
            next,
            vec![tag("team", "a"), tag("env", "prod"), tag("cost", "1")]
        );
        let next = merged_tags(&next, &[], &["team".into(), "absent".into()]);
        assert_eq!(next, vec![tag("env", "prod"), tag("cost", "1")]);
        assert!(check_tags(&[tag("ok", "")]).is_ok());
        for bad in [tag("", "x"), tag("aws:x", "y"), tag(&"k".repeat(129), "")] {
            assert!(check_tags(std::slice::from_ref(&bad)).is_err(), "{bad:?}");
        }
    }
}
