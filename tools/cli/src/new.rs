//! `svrkit new NAME`: scaffold a service that compiles and passes its test at once.
//!
//! Inside an svrkit workspace (a directory with `svrkit-core/` and a `[workspace]`
//! Cargo.toml) the crate goes to `services/NAME`, its IDL to `idl/NAME/NAME.proto`, and it
//! joins the workspace. Anywhere else it is a standalone crate `NAME/` that depends on this
//! svrkit checkout by path. Names come from svrkit-codegen, so the scaffold always agrees
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
    /// Start from this .proto (its first service is scaffolded) instead of a starter.
    #[arg(long)]
    idl: Option<PathBuf>,
    /// Where to create it (default: the current directory).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
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
fn svrkit_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
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
    if !valid {
        return Err(Failure::Usage(anyhow!(
            "{name:?}: use lowercase letters, digits and underscores, starting with a letter"
        )));
    }
    let dir = args
        .dir
        .canonicalize()
        .map_err(|e| Failure::Usage(anyhow!("{}: {e}", args.dir.display())))?;
    let in_workspace = dir.join("svrkit-core").is_dir()
        && std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]"));
    let svrkit = svrkit_root();
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
    let svrkit_idl = svrkit.join("idl");
    let mut compiler = protox::Compiler::new([idl_root.clone(), svrkit_idl.clone()])
        .map_err(|e| Failure::Usage(anyhow!("{e}")))?;
    let relative = idl_file
        .strip_prefix(&idl_root)
        .unwrap_or(&idl_file)
        .to_path_buf();
    compiler
        .open_file(&relative)
        .map_err(|e| Failure::Usage(anyhow!("{e}")))?;
    let pool = compiler.descriptor_pool();
    let service = pool
        .services()
        .find(|s| s.parent_file().name() == relative.to_string_lossy())
        .ok_or_else(|| Failure::Usage(anyhow!("{} declares no service", idl_file.display())))?;
    let package = service.package_name().to_string();
    let service_name = svrkit_codegen::type_name(service.name());

    let mut methods = String::new();
    let mut calls = String::new();
    for method in service.methods() {
        let rust_type = |m: &prost_reflect::MessageDescriptor| -> Result<String, Failure> {
            if m.full_name() == "google.protobuf.Empty" {
                Ok("()".to_string())
            } else if m.package_name() == package {
                Ok(format!("proto::{}", svrkit_codegen::type_name(m.name())))
            } else {
                Err(Failure::Usage(anyhow!(
                    "{}: messages from other packages are not scaffolded yet",
                    m.full_name()
                )))
            }
        };
        let (input, output) = (rust_type(&method.input())?, rust_type(&method.output())?);
        let fn_name = svrkit_codegen::method_name(method.name());
        let _ = write!(
            methods,
            "    async fn {fn_name}(&self, request: {input}) -> Result<{output}, Status> {{\n        \
             // The logic of {}/{} goes here.\n        let _ = request;\n        Ok(Default::default())\n    }}\n",
            service.full_name(),
            method.name()
        );
        let _ = writeln!(
            calls,
            "    client.{fn_name}(Default::default()).await.expect(\"{} answers\");",
            method.name()
        );
    }

    let crate_ident = name.to_string();
    let vars = [
        ("package", package.clone()),
        ("full_service", service.full_name().to_string()),
        ("crate_name", name.to_string()),
        ("crate_ident", crate_ident),
        ("impl_type", format!("{service_name}Service")),
        ("trait_name", svrkit_codegen::trait_name(&service_name)),
        ("server_type", svrkit_codegen::server_type(&service_name)),
        (
            "server_module",
            svrkit_codegen::server_module(&service_name),
        ),
        ("client_type", svrkit_codegen::client_type(&service_name)),
        (
            "client_module",
            svrkit_codegen::client_module(&service_name),
        ),
        ("methods", methods),
        ("calls", calls),
    ];
    let (manifest, build_vars) = if in_workspace {
        (
            format!(
                "[package]\nname = \"{name}\"\nversion.workspace = true\nedition.workspace = true\nrust-version.workspace = true\nlicense.workspace = true\n\n\
                 [dependencies]\nanyhow.workspace = true\nprost.workspace = true\nsvrkit.workspace = true\ntokio.workspace = true\n\n\
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
                 [dependencies]\nanyhow = \"1\"\nprost = \"0.14\"\nsvrkit = {{ path = {} }}\n\
                 tokio = {{ version = \"1\", features = [\"rt-multi-thread\", \"net\", \"time\", \"sync\", \"macros\", \"signal\"] }}\n\n\
                 [build-dependencies]\nsvrkit-codegen = {{ path = {} }}\n\n\
                 # A workspace of its own, so a parent directory's workspace does not claim it.\n[workspace]\n",
                quoted(&svrkit.join("svrkit-core")),
                quoted(&svrkit.join("svrkit-codegen")),
            ),
            [
                ("proto_path", quoted(&Path::new("idl").join(&relative))),
                ("include_paths", format!("\"idl\", {}", quoted(&svrkit_idl))),
            ],
        )
    };
    create(&crate_dir.join("Cargo.toml"), &manifest)?;
    create(&crate_dir.join("build.rs"), &fill(BUILD, &build_vars))?;
    create(&crate_dir.join("src/lib.rs"), &fill(LIB, &vars))?;
    create(&crate_dir.join("src/main.rs"), &fill(MAIN, &vars))?;
    create(&crate_dir.join("tests/smoke.rs"), &fill(TEST, &vars))?;

    if in_workspace {
        let root = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&root).map_err(|e| Failure::Failed(e.into()))?;
        let member = format!("\"services/{name}\"");
        if !text.contains(&member) {
            let updated = text.replacen("members = [", &format!("members = [{member}, "), 1);
            std::fs::write(&root, updated).map_err(|e| Failure::Failed(e.into()))?;
            outln!("  added    {member} to the workspace");
        }
    }
    outln!(
        "next: cargo test --manifest-path {}",
        crate_dir.join("Cargo.toml").display()
    );
    Ok(())
}
