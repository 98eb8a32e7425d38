//! The page templates (minijinja, HTML auto-escaped) and the static
//! assets, all compiled into the binary: nothing is fetched at run time.

/// Every template, by name.
pub const SOURCES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("overview.html", include_str!("../templates/overview.html")),
    (
        "exchanges.html",
        include_str!("../templates/exchanges.html"),
    ),
    ("entry.html", include_str!("../templates/entry.html")),
    ("who.html", include_str!("../templates/who.html")),
    (
        "agreements.html",
        include_str!("../templates/agreements.html"),
    ),
    (
        "agreement.html",
        include_str!("../templates/agreement.html"),
    ),
    ("confirm.html", include_str!("../templates/confirm.html")),
    ("propose.html", include_str!("../templates/propose.html")),
    ("message.html", include_str!("../templates/message.html")),
    ("registry.html", include_str!("../templates/registry.html")),
    ("dataset.html", include_str!("../templates/dataset.html")),
    ("verify.html", include_str!("../templates/verify.html")),
];

/// Source files that look translations up in code (`fill(lang, "key", ..)`).
pub const CODE: &[&str] = &[include_str!("entries.rs"), include_str!("pages.rs")];

/// Static files: name, content type, bytes.
pub const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../assets/console.css"),
    ),
    (
        "proof.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/proof.js"),
    ),
];

/// The template environment.
pub fn environment() -> Result<minijinja::Environment<'static>, minijinja::Error> {
    let mut env = minijinja::Environment::new();
    for (name, source) in SOURCES {
        env.add_template(name, source)?;
    }
    Ok(env)
}
