//! `kiln tls init DIR`: a cluster's own certificate authority and the coordinator's
//! certificate signed by it, as PEM files readable by their owner only. Workers and clients
//! trust the CA (`ca_file`); the coordinator serves with the certificate and its key.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::common::write_secret;
use super::error::{CliError, ResultExt};

/// The files `kiln tls init` writes, by their names in DIR.
const CA: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
const CERT: &str = "coordinator.pem";
const KEY: &str = "coordinator-key.pem";

/// Names every coordinator certificate covers, besides those asked for: this host's loopback.
const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// `kiln tls init DIR [--host NAME]...`: writes a CA and a coordinator certificate for the
/// loopback names and `hosts` (DNS names or IP addresses). Never overwrites a file.
pub fn init(dir: &Path, hosts: &[String], json: bool) -> Result<(), CliError> {
    let paths: Vec<PathBuf> = [CA, CA_KEY, CERT, KEY]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    if let Some(existing) = paths.iter().find(|p| p.exists()) {
        return Err(CliError::bad_input(anyhow!(
            "{} exists: `kiln tls init` never overwrites a certificate or key; pick an empty directory",
            existing.display()
        )));
    }
    let mut names: Vec<String> = LOOPBACK.iter().map(|s| (*s).to_owned()).collect();
    for host in hosts {
        if !names.contains(host) {
            names.push(host.clone());
        }
    }
    let made = make(&names).bad_input()?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating {}", dir.display()))
        .infra()?;
    for (path, pem) in paths
        .iter()
        .zip([made.ca, made.ca_key, made.cert, made.key])
    {
        write_secret(path, &pem)
            .with_context(|| format!("writing {}", path.display()))
            .infra()?;
    }
    let shown = |name: &str| dir.join(name).display().to_string();
    if json {
        let out = serde_json::json!({
            "ca_file": shown(CA),
            "ca_key_file": shown(CA_KEY),
            "cert_file": shown(CERT),
            "key_file": shown(KEY),
            "hosts": names,
        });
        println!("{out:#}");
        return Ok(());
    }
    println!(
        "wrote {} (the CA; give it to workers and clients)",
        shown(CA)
    );
    println!("wrote {} (the CA's key; keep it offline)", shown(CA_KEY));
    println!("wrote {} for {}", shown(CERT), names.join(", "));
    println!("wrote {}", shown(KEY));
    println!("\nIn the cluster block:\n");
    println!("  coordinator {{\n    tls {{");
    println!("      cert_file = {:?}", shown(CERT));
    println!("      key_file  = {:?}", shown(KEY));
    println!("      ca_file   = {:?}", shown(CA));
    println!("    }}\n  }}");
    Ok(())
}

/// The four PEM texts.
struct Made {
    ca: String,
    ca_key: String,
    cert: String,
    key: String,
}

fn make(names: &[String]) -> anyhow::Result<Made> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kiln cluster CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key)?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())
        .with_context(|| format!("{} is not a DNS name or IP address", names.join(", ")))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kiln coordinator");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &Issuer::new(ca_params, &ca_key))?;
    Ok(Made {
        ca: ca.pem(),
        ca_key: ca_key.serialize_pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}
