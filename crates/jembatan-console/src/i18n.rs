//! Bahasa Indonesia and English: every string a page shows comes from
//! `i18n/{id,en}.toml`, chosen by the language cookie, else by the
//! browser's `Accept-Language`, else Indonesian.

use std::collections::BTreeMap;
use std::sync::LazyLock;

/// A language the console speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Id,
    En,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::Id, Lang::En];

    pub fn code(self) -> &'static str {
        match self {
            Lang::Id => "id",
            Lang::En => "en",
        }
    }

    pub fn parse(code: &str) -> Option<Lang> {
        match code {
            "id" => Some(Lang::Id),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The language for a request: an explicit choice (the cookie) first,
    /// then the first supported language in `Accept-Language` by weight.
    pub fn negotiate(cookie: Option<&str>, accept_language: Option<&str>) -> Lang {
        if let Some(lang) = cookie.and_then(Lang::parse) {
            return lang;
        }
        let mut best: Option<(f32, Lang)> = None;
        for item in accept_language.unwrap_or("").split(',') {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse().ok()))
                .unwrap_or(1.0_f32);
            let primary = tag.split('-').next().unwrap_or("");
            // "in" is the old code for Indonesian, still sent by some systems
            let lang = match primary {
                "id" | "in" => Lang::Id,
                "en" => Lang::En,
                _ => continue,
            };
            if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
                best = Some((q, lang));
            }
        }
        best.map_or(Lang::Id, |(_, l)| l)
    }

    /// This language's strings.
    pub fn strings(self) -> &'static Strings {
        match self {
            Lang::Id => &ID,
            Lang::En => &EN,
        }
    }
}

/// One language's strings, by key.
pub type Strings = BTreeMap<String, String>;

fn load(text: &str) -> Strings {
    // the files are part of the binary and checked by a test, so a
    // failure here is a build that was never tested
    toml::from_str(text).unwrap_or_default()
}

static ID: LazyLock<Strings> = LazyLock::new(|| load(include_str!("../i18n/id.toml")));
static EN: LazyLock<Strings> = LazyLock::new(|| load(include_str!("../i18n/en.toml")));

/// `key`'s text in `lang` with each `{name}` replaced by its value.
pub fn fill(lang: Lang, key: &str, values: &[(&str, &str)]) -> String {
    let mut text = lang
        .strings()
        .get(key)
        .cloned()
        .unwrap_or_else(|| key.to_owned());
    for (name, value) in values {
        text = text.replace(&format!("{{{name}}}"), value);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_files_parse_and_have_the_same_keys() {
        let id: Strings = toml::from_str(include_str!("../i18n/id.toml")).unwrap();
        let en: Strings = toml::from_str(include_str!("../i18n/en.toml")).unwrap();
        let only_id: Vec<_> = id.keys().filter(|k| !en.contains_key(*k)).collect();
        let only_en: Vec<_> = en.keys().filter(|k| !id.contains_key(*k)).collect();
        assert!(
            only_id.is_empty() && only_en.is_empty(),
            "{only_id:?} {only_en:?}"
        );
        assert!(id.len() > 50);
    }

    #[test]
    fn every_key_the_templates_and_code_use_is_translated() {
        let mut used = Vec::new();
        for text in crate::templates::CODE {
            for (i, _) in text.match_indices("fill(") {
                let rest = &text[i + 5..];
                let Some(open) = rest.find('"').filter(|o| *o < 24) else {
                    continue;
                };
                let key = &rest[open + 1..];
                used.push(key[..key.find('"').unwrap_or(0)].to_owned());
            }
        }
        for text in crate::templates::SOURCES.iter().map(|(_, text)| *text) {
            for (i, _) in text.match_indices("t.") {
                let before = text[..i].chars().last();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
                    continue;
                }
                let key: String = text[i + 2..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !key.is_empty() {
                    used.push(key);
                }
            }
        }
        for lang in Lang::ALL {
            let missing: Vec<_> = used
                .iter()
                .filter(|k| !lang.strings().contains_key(k.as_str()))
                .collect();
            assert!(missing.is_empty(), "{}: {missing:?}", lang.code());
        }
    }

    #[test]
    fn the_language_follows_the_choice_then_the_browser() {
        let cases = [
            (None, None, Lang::Id),
            (None, Some("en-US,en;q=0.9"), Lang::En),
            (None, Some("fr, id;q=0.5, en;q=0.4"), Lang::Id),
            (None, Some("en;q=0.3, in;q=0.8"), Lang::Id),
            (None, Some("de"), Lang::Id),
            (Some("en"), Some("id"), Lang::En),
            (Some("xx"), Some("en"), Lang::En),
        ];
        for (cookie, header, want) in cases {
            assert_eq!(
                Lang::negotiate(cookie, header),
                want,
                "{cookie:?} {header:?}"
            );
        }
    }

    #[test]
    fn placeholders_are_filled() {
        let s = fill(Lang::En, "entry_denied", &[("consumer", "dinkes")]);
        assert!(s.contains("dinkes") && !s.contains("{consumer}"));
    }
}
