//! Content types and the content manager: what models a Strapi has (the controller validates
//! routes' models and uids against them), and the calls an editor makes in the admin panel to
//! create, update, publish, unpublish and delete entries, which is what makes Strapi emit
//! `entry.*` webhook events. Tests, the demo and the benchmarks drive Strapi through these.

use reqwest::Method;
use serde::{Deserialize, de::IgnoredAny};
use serde_json::{Map, Value};

use super::{Call, StrapiClient, StrapiError};

/// Collection type or single type.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentTypeKind {
    /// Many entries (`article`).
    #[serde(rename = "collectionType")]
    Collection,
    /// One entry (`homepage`).
    #[serde(rename = "singleType")]
    Single,
}

/// A content type as the content manager lists it.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(from = "RawContentType")]
pub struct ContentType {
    /// The uid, e.g. `api::article.article`; webhook events carry it as `uid`.
    pub uid: String,
    /// Collection or single type.
    pub kind: ContentTypeKind,
    /// Singular name, e.g. `article`; webhook events carry it as `model`.
    pub singular_name: String,
    /// Plural name, e.g. `articles`.
    pub plural_name: String,
    /// Name shown in the admin panel.
    pub display_name: String,
    /// Whether entries have drafts and are published (`entry.publish` and `entry.unpublish`).
    pub draft_and_publish: bool,
    /// Whether the admin panel shows it; Strapi's internal types (users, files) are hidden.
    pub visible: bool,
    /// Whether entries exist once per locale (the i18n plugin's `localized` option).
    pub localized: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawContentType {
    uid: String,
    kind: ContentTypeKind,
    info: RawInfo,
    #[serde(default)]
    options: RawOptions,
    #[serde(default)]
    is_displayed: bool,
    #[serde(default)]
    plugin_options: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawInfo {
    singular_name: String,
    plural_name: String,
    #[serde(default)]
    display_name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawOptions {
    #[serde(default)]
    draft_and_publish: bool,
}

impl From<RawContentType> for ContentType {
    fn from(raw: RawContentType) -> Self {
        ContentType {
            uid: raw.uid,
            kind: raw.kind,
            singular_name: raw.info.singular_name,
            plural_name: raw.info.plural_name,
            display_name: raw.info.display_name,
            draft_and_publish: raw.options.draft_and_publish,
            visible: raw.is_displayed,
            localized: raw.plugin_options["i18n"]["localized"].as_bool() == Some(true),
        }
    }
}

/// An entry as the content manager returns it.
#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct Entry {
    /// Strapi 5's stable id of the document (shared by its draft and published versions).
    #[serde(rename = "documentId")]
    pub document_id: String,
    /// Every other field: the content type's attributes, `id`, `publishedAt`, `status`, ...
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// Which version of documents with drafts a listing returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionStatus {
    /// The drafts (for a content type without drafts: its only version).
    Draft,
    /// The published versions.
    Published,
}

impl VersionStatus {
    fn as_str(self) -> &'static str {
        match self {
            VersionStatus::Draft => "draft",
            VersionStatus::Published => "published",
        }
    }

    /// The timestamp that moves when this version changes.
    pub fn changed_field(self) -> &'static str {
        match self {
            VersionStatus::Draft => "updatedAt",
            VersionStatus::Published => "publishedAt",
        }
    }
}

/// What a listing of changed entries found, and what it cost.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Listed {
    /// The entries, oldest change first.
    pub entries: Vec<Entry>,
    /// Admin API calls made.
    pub calls: u32,
}

/// One page of the content manager's list.
#[derive(Deserialize)]
struct ListPage {
    results: Vec<Entry>,
    pagination: Pagination,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pagination {
    page_count: u32,
}

/// A locale of the i18n plugin.
#[derive(Deserialize)]
struct Locale {
    code: String,
}

/// A single type's entry as the content manager returns it.
#[derive(Deserialize)]
struct SingleAnswer {
    data: Entry,
}

// The content manager's largest page.
const PAGE_SIZE: u32 = 100;

/// Which document a content-manager call acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Document<'a> {
    /// One entry of a collection type.
    Entry {
        /// The content type's uid, e.g. `api::article.article`.
        uid: &'a str,
        /// The entry's `documentId`.
        document_id: &'a str,
    },
    /// The entry of a single type.
    Single {
        /// The content type's uid, e.g. `api::homepage.homepage`.
        uid: &'a str,
    },
}

impl Document<'_> {
    fn segments(&self) -> Vec<&str> {
        match *self {
            Document::Entry { uid, document_id } => {
                vec!["content-manager", "collection-types", uid, document_id]
            }
            Document::Single { uid } => vec!["content-manager", "single-types", uid],
        }
    }

    fn action(&self, action: &'static str) -> Vec<&str> {
        let mut segments = self.segments();
        segments.extend(["actions", action]);
        segments
    }
}

impl StrapiClient {
    /// Every content type, Strapi's internal ones included (see [`ContentType::visible`]).
    pub async fn list_content_types(&self) -> Result<Vec<ContentType>, StrapiError> {
        self.call(Call::new(
            "list content types",
            Method::GET,
            &["content-manager", "content-types"],
        ))
        .await
    }

    /// Entries of a collection type whose `status` version changed at or after `since` (an
    /// ISO 8601 time in Strapi's clock): `updatedAt` for drafts, `publishedAt` for published
    /// versions. Every page, oldest change first; `locale` lists one locale of a localised type.
    pub async fn list_changed(
        &self,
        uid: &str,
        status: VersionStatus,
        since: &str,
        locale: Option<&str>,
    ) -> Result<Listed, StrapiError> {
        let field = status.changed_field();
        let mut listed = Listed::default();
        let mut page = 1;
        loop {
            let mut call = Call::new(
                "list changed entries",
                Method::GET,
                &["content-manager", "collection-types", uid],
            )
            .query("page", page.to_string())
            .query("pageSize", PAGE_SIZE.to_string())
            .query("sort", format!("{field}:ASC"))
            .query("status", status.as_str())
            .query(&format!("filters[{field}][$gte]"), since);
            if let Some(locale) = locale {
                call = call.query("locale", locale);
            }
            let answer: ListPage = self.call_unwrapped(call).await?;
            listed.calls += 1;
            listed.entries.extend(answer.results);
            if page >= answer.pagination.page_count {
                return Ok(listed);
            }
            page += 1;
        }
    }

    /// The `status` version of a single type's entry, `None` when it has none.
    pub async fn single_entry(
        &self,
        uid: &str,
        status: VersionStatus,
        locale: Option<&str>,
    ) -> Result<Option<Entry>, StrapiError> {
        let mut call = Call::new(
            "read single type",
            Method::GET,
            &["content-manager", "single-types", uid],
        )
        .query("status", status.as_str());
        if let Some(locale) = locale {
            call = call.query("locale", locale);
        }
        match self.call_unwrapped::<SingleAnswer>(call).await {
            Ok(answer) => Ok(Some(answer.data)),
            Err(StrapiError::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The codes of the i18n plugin's locales, e.g. `en`, `fr`.
    pub async fn list_locales(&self) -> Result<Vec<String>, StrapiError> {
        let locales: Vec<Locale> = self
            .call_unwrapped(Call::new("list locales", Method::GET, &["i18n", "locales"]))
            .await?;
        Ok(locales.into_iter().map(|locale| locale.code).collect())
    }

    /// Creates a draft entry of a collection type from a JSON object of its fields (Strapi emits
    /// `entry.create`).
    pub async fn create_entry(&self, uid: &str, data: &Value) -> Result<Entry, StrapiError> {
        let call = Call::new(
            "create entry",
            Method::POST,
            &["content-manager", "collection-types", uid],
        )
        .json(data);
        self.call(call).await
    }

    /// Updates a document's draft with a JSON object of fields (`entry.update`); for a single type this
    /// also creates the entry the first time (`entry.create`).
    pub async fn update_document(
        &self,
        document: Document<'_>,
        data: &Value,
    ) -> Result<Entry, StrapiError> {
        self.call(Call::new("update entry", Method::PUT, &document.segments()).json(data))
            .await
    }

    /// Publishes a document's draft (`entry.publish`).
    pub async fn publish(&self, document: Document<'_>) -> Result<Entry, StrapiError> {
        let call =
            Call::new("publish entry", Method::POST, &document.action("publish")).json(&Map::new());
        self.call(call).await
    }

    /// Unpublishes a document, keeping its draft (`entry.unpublish`).
    pub async fn unpublish(&self, document: Document<'_>) -> Result<Entry, StrapiError> {
        let call = Call::new(
            "unpublish entry",
            Method::POST,
            &document.action("unpublish"),
        )
        .json(&Map::new());
        self.call(call).await
    }

    /// Deletes a document with its draft and published versions (`entry.delete`).
    pub async fn delete_document(&self, document: Document<'_>) -> Result<(), StrapiError> {
        self.call::<Option<IgnoredAny>>(Call::new(
            "delete entry",
            Method::DELETE,
            &document.segments(),
        ))
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_content_managers_content_type() {
        let raw = json!({
            "uid": "api::article.article", "isDisplayed": true, "apiID": "article", "kind": "collectionType",
            "info": {"singularName": "article", "pluralName": "articles", "displayName": "Article"},
            "options": {"draftAndPublish": true}, "attributes": {}
        });
        let content_type: ContentType = serde_json::from_value(raw).unwrap();
        assert_eq!(
            content_type,
            ContentType {
                uid: "api::article.article".into(),
                kind: ContentTypeKind::Collection,
                singular_name: "article".into(),
                plural_name: "articles".into(),
                display_name: "Article".into(),
                draft_and_publish: true,
                visible: true,
                localized: false,
            }
        );
    }

    #[test]
    fn documents_map_to_content_manager_paths() {
        let entry = Document::Entry {
            uid: "api::article.article",
            document_id: "abc",
        };
        assert_eq!(
            entry.action("publish").join("/"),
            "content-manager/collection-types/api::article.article/abc/actions/publish"
        );
        let single = Document::Single {
            uid: "api::homepage.homepage",
        };
        assert_eq!(
            single.segments().join("/"),
            "content-manager/single-types/api::homepage.homepage"
        );
    }
}
