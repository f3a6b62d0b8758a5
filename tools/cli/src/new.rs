//! `svrkit new NAME`: scaffold a service that compiles and passes its test at once.
//!
//! Inside an svrkit workspace (a directory with `svrkit-core/` and a `[workspace]`
//! Cargo.toml) the crate goes to `services/NAME`, its IDL to `idl/NAME/NAME.proto`, and it
//! joins the workspace. Anywhere else it is a standalone crate `NAME/` that depends on
//! svrkit by version, as a crate from crates.io does (`--svrkit-path` or `--svrkit-git`
//! for a checkout instead). Names come from svrkit-codegen, so the scaffold always agrees
//! with the generated code. Existing files are never overwritten.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};

use crate::Failure;

/// Options of `svrkit new`.
#[derive(Debug, clap::Args)]
pub(crate) struct NewArgs {
    /// The crate's name: lowercase letters, digits and underscores, e.g. `greeter`.
    name: String,
    /// Start from this .proto (every service it declares is scaffolded) instead of a
    /// starter.
    #[arg(long)]
    idl: Option<PathBuf>,
    /// Where to create it (default: the current directory).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Build svrkit with etcd support (needs `protoc` at build time) when the crate is
    /// outside this workspace; inside it the workspace's features apply.
    #[arg(long)]
    etcd: bool,
    /// Outside a workspace: depend on the svrkit checkout in DIR by path instead of on
    /// the released version.
    #[arg(long, value_name = "DIR", conflicts_with = "svrkit_git")]
    svrkit_path: Option<PathBuf>,
    /// Outside a workspace: depend on svrkit from this git repository instead of on the
    /// released version.
    #[arg(long, value_name = "URL")]
    svrkit_git: Option<String>,
}

/// The dependency on a svrkit crate (in `dir` of a checkout) as a standalone crate
/// writes it, with `extra` keys.
fn dependency(args: &NewArgs, dir: &str, extra: &str) -> String {
    match (&args.svrkit_path, &args.svrkit_git) {
        (Some(root), _) => {
            let root = root.canonicalize().unwrap_or_else(|_| root.clone());
            format!("{{ path = {}{extra} }}", quoted(&root.join(dir)))
        }
        (None, Some(url)) => format!("{{ git = {url:?}{extra} }}"),
        (None, None) => {
            // The release this CLI belongs to: `0.1` takes any compatible 0.1.x.
            let version = env!("CARGO_PKG_VERSION");
            let compatible = version.rsplit_once('.').map_or(version, |(head, _)| head);
            format!("{{ version = \"{compatible}\"{extra} }}")
        }
    }
}

const STARTER: &str = include_str!("../templates/starter.proto");
const BUILD: &str = include_str!("../templates/build.rs.tmpl");
const LIB: &str = include_str!("../templates/lib.rs.tmpl");
const MAIN: &str = include_str!("../templates/main.rs.tmpl");
const TEST: &str = include_str!("../templates/test.rs.tmpl");

fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (key, value) in vars {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    out
}

/// Writes `content` unless the file exists. Returns whether it wrote.
fn create(path: &Path, content: &str) -> anyhow::Result<bool> {
    if path.exists() {
        outln!("  kept     {}", path.display());
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
    outln!("  created  {}", path.display());
    Ok(true)
}

/// The svrkit checkout this binary was built from.
/// Whether `name` is a Rust keyword, which a crate name used as a path cannot be.
fn syn_keyword(name: &str) -> bool {
    svrkit_codegen::module_ident(name) != name
}

/// `code` as rustfmt would write it (edition 2024), or unchanged if rustfmt is missing.
fn rustfmt(code: String) -> String {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let Ok(mut child) = Command::new("rustfmt")
        .args(["--edition", "2024", "--emit", "stdout", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return code;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(code.as_bytes());
    }
    match child.wait_with_output() {
        Ok(out) if out.status.success() && !out.stdout.is_empty() => {
            String::from_utf8(out.stdout).unwrap_or(code)
        }
        _ => code,
    }
}

/// The parts of the scaffold that depend on the IDL.
struct ScaffoldCode {
    /// The nested package modules inside `proto`.
    modules: String,
    /// `pub use` lines, one struct and one trait impl per service.
    impls: String,
    /// `.add_service(...)` calls, one per service.
    add_services: String,
    /// The smoke test's client calls, every method of every service.
    calls: String,
}

/// A package tree of modules, each leaf including its package's generated code.
#[derive(Default)]
struct PackageTree {
    package: Option<String>,
    children: std::collections::BTreeMap<String, PackageTree>,
}

impl PackageTree {
    fn insert(&mut self, package: &str) {
        let mut node = self;
        for segment in package.split('.').filter(|s| !s.is_empty()) {
            node = node
                .children
                .entry(svrkit_codegen::module_ident(segment))
                .or_default();
        }
        node.package = Some(package.to_string());
    }

    fn write(&self, out: &mut String) {
        if let Some(package) = &self.package {
            let _ = writeln!(out, "svrkit::include_proto!(\"{package}\");");
        }
        for (module, child) in &self.children {
            let _ = writeln!(out, "pub mod {module} {{");
            child.write(out);
            let _ = writeln!(out, "}}");
        }
    }
}

/// The Rust type a handler of `message` takes or returns, from the crate root.
fn scaffold_type(message: &prost_reflect::MessageDescriptor) -> String {
    let path = svrkit_codegen::message_path(message.package_name(), message.full_name());
    if message.package_name() == "google.protobuf" {
        path
    } else {
        format!("proto::{path}")
    }
}

/// Handlers, registrations and smoke-test calls for every service of the file, with the
/// names svrkit-codegen gives them.
fn scaffold_code(
    pool: &prost_reflect::DescriptorPool,
    services: &[prost_reflect::ServiceDescriptor],
    crate_ident: &str,
) -> ScaffoldCode {
    let mut tree = PackageTree::default();
    for file in pool.files() {
        let name = file.name();
        if !name.starts_with("google/protobuf/") && name != "svrkit/options.proto" {
            tree.insert(file.package_name());
        }
    }
    let mut code = ScaffoldCode {
        modules: String::new(),
        impls: String::new(),
        add_services: String::new(),
        calls: String::new(),
    };
    tree.write(&mut code.modules);
    for service in services {
        let rust = svrkit_codegen::type_name(service.name());
        let package: Vec<String> = service
            .package_name()
            .split('.')
            .filter(|s| !s.is_empty())
            .map(svrkit_codegen::module_ident)
            .collect();
        let package = if package.is_empty() {
            "proto".to_string()
        } else {
            format!("proto::{}", package.join("::"))
        };
        let client = svrkit_codegen::client_type(&rust);
        let server = svrkit_codegen::server_type(&rust);
        let trait_name = svrkit_codegen::trait_name(&rust);
        let impl_type = format!("{}Service", rust.trim_end_matches('_'));
        let _ = writeln!(
            code.impls,
            "pub use {package}::{}::{client};\npub use {package}::{}::{{{trait_name}, {server}}};\n",
            svrkit_codegen::client_module(&rust),
            svrkit_codegen::server_module(&rust),
        );
        let _ = writeln!(
            code.impls,
            "/// The state and logic of `{}`. Fill in each method.\n#[derive(Debug, Clone, Default)]\npub struct {impl_type};\n\nimpl {trait_name} for {impl_type} {{",
            service.full_name()
        );
        let names: Vec<String> = service.methods().map(|m| m.name().to_string()).collect();
        let idents = svrkit_codegen::method_idents(&names);
        let variable = format!("{}_client", svrkit_codegen::snake_case(&impl_type));
        let _ = writeln!(
            code.calls,
            "let {variable} = {crate_ident}::{client}::new(channel.clone());"
        );
        for (method, ident) in service.methods().zip(&idents) {
            let input = scaffold_type(&method.input());
            let output = scaffold_type(&method.output());
            let _ = writeln!(
                code.impls,
                "async fn {ident}(&self, request: {input}) -> Result<{output}, Status> {{\n\
                 // The logic of {}/{} goes here.\nlet _ = request;\nOk(Default::default())\n}}",
                service.full_name(),
                method.name()
            );
            let _ = writeln!(
                code.calls,
                "{variable}.{ident}(Default::default()).await.expect(\"{}/{} answers\");",
                service.full_name(),
                method.name()
            );
        }
        let _ = writeln!(code.impls, "}}\n");
        let _ = write!(
            code.add_services,
            ".add_service({crate_ident}::{server}::new({crate_ident}::{impl_type}))"
        );
    }
    code
}

fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

pub(crate) async fn run(args: NewArgs) -> Result<(), Failure> {
    let name = args.name.as_str();
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid || syn_keyword(name) {
        return Err(Failure::Usage(anyhow!(
            "{name:?}: use lowercase letters, digits and underscores, starting with a letter"
        )));
    }
    // A folder that does not exist yet is made (`svrkit new greeter --dir services/new`).
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| Failure::Failed(anyhow!("creating {}: {e}", args.dir.display())))?;
    let dir = args
        .dir
        .canonicalize()
        .map_err(|e| Failure::Usage(anyhow!("{}: {e}", args.dir.display())))?;
    let in_workspace = dir.join("svrkit-core").is_dir()
        && std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]"));
    let (crate_dir, idl_file, idl_root) = if in_workspace {
        (
            dir.join("services").join(name),
            dir.join("idl").join(name).join(format!("{name}.proto")),
            dir.join("idl"),
        )
    } else {
        let crate_dir = dir.join(name);
        (
            crate_dir.clone(),
            crate_dir.join("idl").join(format!("{name}.proto")),
            crate_dir.join("idl"),
        )
    };

    // The IDL first: everything else is derived from it.
    outln!("scaffolding {name} in {}", crate_dir.display());
    let proto = match &args.idl {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| Failure::Usage(anyhow!("{}: {e}", file.display())))?,
        None => fill(
            STARTER,
            &[
                ("package", name.to_string()),
                ("Service", svrkit_codegen::type_name(name)),
            ],
        ),
    };
    create(&idl_file, &proto)?;
    // svrkit's own options are built into svrkit-codegen: no checkout of svrkit needed.
    let mut compiler = svrkit_codegen::compiler(std::slice::from_ref(&idl_root));
    let relative = idl_file
        .strip_prefix(&idl_root)
        .unwrap_or(&idl_file)
        .to_path_buf();
    compiler
        .open_file(&relative)
        .map_err(|e| Failure::Usage(anyhow!("{e}")))?;
    let pool = compiler.descriptor_pool();
    let file_name = relative.to_string_lossy().replace('\\', "/");
    let services: Vec<_> = pool
        .services()
        .filter(|s| s.parent_file().name() == file_name)
        .collect();
    if services.is_empty() {
        return Err(Failure::Usage(anyhow!(
            "{} declares no service",
            idl_file.display()
        )));
    }
    let code = scaffold_code(&pool, &services, name);
    let served: Vec<String> = services
        .iter()
        .map(|s| format!("`{}`", s.full_name()))
        .collect();
    let vars = [
        (
            "description",
            format!(
                "The {} service(s), scaffolded by `svrkit new`.",
                served.join(", ")
            ),
        ),
        ("served", served.join(", ")),
        ("first_service", services[0].full_name().to_string()),
        ("modules", code.modules),
        ("impls", code.impls),
        ("add_services", code.add_services),
        ("calls", code.calls),
    ];
    let (manifest, build_vars) = if in_workspace {
        (
            format!(
                "[package]\nname = \"{name}\"\nversion.workspace = true\nedition.workspace = true\nrust-version.workspace = true\nlicense.workspace = true\n\n\
                 [dependencies]\nanyhow.workspace = true\nsvrkit.workspace = true\ntokio.workspace = true\n\n\
                 [build-dependencies]\nsvrkit-codegen.workspace = true\n\n[lints]\nworkspace = true\n"
            ),
            [
                (
                    "proto_path",
                    quoted(&Path::new("../../idl").join(&relative)),
                ),
                ("include_paths", quoted(Path::new("../../idl"))),
            ],
        )
    } else {
        (
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
                 [dependencies]\nanyhow = \"1\"\nsvrkit = {}\n\
                 tokio = {{ version = \"1\", features = [\"rt-multi-thread\", \"net\", \"time\", \"sync\", \"macros\", \"signal\"] }}\n\n\
                 [build-dependencies]\nsvrkit-codegen = {}\n\n\
                 # A workspace of its own, so a parent directory's workspace does not claim it.\n[workspace]\n",
                // etcd support needs `protoc` to build; only on request.
                dependency(
                    &args,
                    "svrkit-core",
                    if args.etcd {
                        ""
                    } else {
                        ", default-features = false"
                    }
                ),
                dependency(&args, "svrkit-codegen", ""),
            ),
            [
                ("proto_path", quoted(&Path::new("idl").join(&relative))),
                ("include_paths", "\"idl\"".to_string()),
            ],
        )
    };
    create(&crate_dir.join("Cargo.toml"), &manifest)?;
    create(
        &crate_dir.join("build.rs"),
        &rustfmt(fill(BUILD, &build_vars)),
    )?;
    create(&crate_dir.join("src/lib.rs"), &rustfmt(fill(LIB, &vars)))?;
    create(&crate_dir.join("src/main.rs"), &rustfmt(fill(MAIN, &vars)))?;
    create(
        &crate_dir.join("tests/smoke.rs"),
        &rustfmt(fill(TEST, &vars)),
    )?;

    if in_workspace {
        add_member(&dir.join("Cargo.toml"), &format!("services/{name}"))?;
        let cluster = dir.join("services").join("svrkit.toml");
        if cluster.is_file() {
            add_service(&cluster, name)?;
        }
    }
    outln!(
        "next: cargo test --manifest-path {}",
        crate_dir.join("Cargo.toml").display()
    );
    Ok(())
}

/// Adds `member` to `[workspace] members` of the manifest at `root`, keeping its
/// formatting and comments; nothing when it is there already.
fn add_member(root: &Path, member: &str) -> Result<(), Failure> {
    let text = std::fs::read_to_string(root).map_err(|e| Failure::Failed(e.into()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| Failure::Failed(anyhow!("{}: {e}", root.display())))?;
    let members = doc
        .get_mut("workspace")
        .and_then(|w| w.get_mut("members"))
        .and_then(toml_edit::Item::as_array_mut)
        .ok_or_else(|| {
            Failure::Failed(anyhow!(
                "{} has no [workspace] members list",
                root.display()
            ))
        })?;
    if members.iter().any(|m| m.as_str() == Some(member)) {
        return Ok(());
    }
    members.push(member);
    std::fs::write(root, doc.to_string()).map_err(|e| Failure::Failed(e.into()))?;
    outln!("  added    \"{member}\" to the workspace");
    Ok(())
}

/// Adds a `[[service]]` entry for the new service `name` to the cluster manifest at
/// `path` (`svrkit up` runs it): one instance, called by the operator's tools only until
/// its author names its callers. Nothing when the manifest has a service of that name.
fn add_service(path: &Path, name: &str) -> Result<(), Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure::Failed(e.into()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| Failure::Failed(anyhow!("{}: {e}", path.display())))?;
    let services = doc
        .entry("service")
        .or_insert(toml_edit::Item::ArrayOfTables(
            toml_edit::ArrayOfTables::new(),
        ))
        .as_array_of_tables_mut()
        .ok_or_else(|| {
            Failure::Failed(anyhow!(
                "{}: `service` is not a list of [[service]] tables",
                path.display()
            ))
        })?;
    if services
        .iter()
        .any(|s| s.get("name").and_then(toml_edit::Item::as_str) == Some(name))
    {
        return Ok(());
    }
    let mut entry = toml_edit::Table::new();
    entry.decor_mut().set_prefix(format!(
        "\n# Scaffolded by `svrkit new {name}`: one instance; add the services that call it\n\
         # to `callers` (and `uid_callers` for those acting for a user).\n"
    ));
    entry.insert("name", toml_edit::value(name));
    entry.insert("args", toml_edit::value(toml_edit::Array::new()));
    entry.insert("instances", toml_edit::value(1));
    let mut callers = toml_edit::Array::new();
    callers.push("operator");
    entry.insert("callers", toml_edit::value(callers));
    services.push(entry);
    std::fs::write(path, doc.to_string()).map_err(|e| Failure::Failed(e.into()))?;
    outln!("  added    [[service]] {name} to {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_service_joins_the_cluster_manifest_once() {
        let dir = svrkit_testkit::tempdir("new-service");
        let path = dir.path().join("svrkit.toml");
        let manifest = "# the cluster\n[registry]\nkind = \"embedded\"\n\n# a store\n[[service]]\nname = \"echo\"\nargs = []\n";
        std::fs::write(&path, manifest).expect("write");
        add_service(&path, "ledger").expect("added");
        add_service(&path, "ledger").expect("again");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.contains("# the cluster") && text.contains("# a store"),
            "{text}"
        );
        let doc: toml::Table = toml::from_str(&text).expect("still TOML");
        let services = doc["service"].as_array().expect("services");
        let names: Vec<&str> = services.iter().filter_map(|s| s["name"].as_str()).collect();
        assert_eq!(names, ["echo", "ledger"], "{text}");
        let ledger = &services[1];
        assert_eq!(ledger["instances"].as_integer(), Some(1));
        assert_eq!(ledger["callers"].as_array().map(Vec::len), Some(1));
        // A manifest without services gets its first.
        std::fs::write(&path, "[registry]\nkind = \"embedded\"\n").expect("write");
        add_service(&path, "ledger").expect("first");
        let doc: toml::Table =
            toml::from_str(&std::fs::read_to_string(&path).expect("read")).expect("TOML");
        assert_eq!(doc["service"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn a_member_joins_the_workspace_once_and_the_manifest_keeps_its_shape() {
        let dir = svrkit_testkit::tempdir("new-member");
        let root = dir.path().join("Cargo.toml");
        let manifest = "# the workspace\n[workspace]\nresolver = \"3\"\nmembers = [\n    \"svrkit-core\", # the runtime\n    \"services/echo\",\n]\n\n[workspace.dependencies]\nmembers = \"not this one\"\n";
        std::fs::write(&root, manifest).expect("write");
        add_member(&root, "services/ledger").expect("added");
        add_member(&root, "services/ledger").expect("again");
        let text = std::fs::read_to_string(&root).expect("read");
        assert_eq!(text.matches("services/ledger").count(), 1, "{text}");
        assert!(
            text.contains("# the runtime") && text.contains("# the workspace"),
            "{text}"
        );
        let doc: toml_edit::DocumentMut = text.parse().expect("still TOML");
        let members: Vec<&str> = doc["workspace"]["members"]
            .as_array()
            .expect("members")
            .iter()
            .filter_map(|m| m.as_str())
            .collect();
        assert_eq!(members, ["svrkit-core", "services/echo", "services/ledger"]);

        std::fs::write(&root, "[package]\nname = \"x\"\n").expect("write");
        assert!(add_member(&root, "services/ledger").is_err());
    }
}
