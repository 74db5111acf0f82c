//! `dev-ca`: the certificates kiosk-api needs on a laptop, made by a
//! development CA of its own (never for production):
//!
//! - `dev-ca init DIR`: `ca.pem` / `ca.key`, a server certificate per
//!   environment (`dev.pem`, `stag.pem`, `prod.pem` with their keys, for
//!   `devKiosk.domain.com`, `stagKiosk.domain.com`, `kiosk.domain.com`), and
//!   an empty revocation list `crl.pem`.
//! - `dev-ca device DIR NAME`: a client certificate for one kiosk or counter
//!   (`NAME.pem`, `NAME.key`; the subject's common name is `NAME`).
//! - `dev-ca revoke DIR NAME...`: rewrites `crl.pem` to revoke those devices
//!   (then `kill -HUP` the host).
//!
//! Serial numbers are kept in `DIR/serials` (`NAME SERIAL` per line).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SerialNumber,
};

/// The environments and their names.
const ENVIRONMENTS: &[(&str, &str)] = &[
    ("dev", "devKiosk.domain.com"),
    ("stag", "stagKiosk.domain.com"),
    ("prod", "kiosk.domain.com"),
];

#[derive(Parser)]
#[command(
    name = "dev-ca",
    about = "A development CA for kiosk-api (never for production)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the CA, one server certificate per environment and an empty CRL.
    Init { dir: PathBuf },
    /// Issue a client certificate for a device.
    Device { dir: PathBuf, name: String },
    /// Revoke devices' certificates (rewrites crl.pem).
    Revoke { dir: PathBuf, names: Vec<String> },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Init { dir } => init(&dir),
        Command::Device { dir, name } => {
            let ca = Ca::load(&dir)?;
            issue(&dir, &ca, &name, &[], true)?;
            println!(
                "{}: client certificate for `{name}`",
                dir.join(format!("{name}.pem")).display()
            );
            Ok(())
        }
        Command::Revoke { dir, names } => {
            let ca = Ca::load(&dir)?;
            let serials = read_serials(&dir)?;
            let mut revoked = Vec::new();
            for name in &names {
                match serials.iter().find(|(n, _)| n == name) {
                    Some((_, serial)) => revoked.push(*serial),
                    None => bail!("no certificate named `{name}` in {}", dir.display()),
                }
            }
            write_crl(&dir, &ca, &revoked)?;
            println!(
                "{}: revokes {}",
                dir.join("crl.pem").display(),
                names.join(", ")
            );
            Ok(())
        }
    }
}

/// The CA: its key is kept, its certificate rebuilt from the same subject.
struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn params() -> anyhow::Result<CertificateParams> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(DnType::CommonName, "kiosk-api development CA");
        params.serial_number = Some(SerialNumber::from(1u64));
        Ok(params)
    }

    fn create() -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let cert = Self::params()?.self_signed(&key)?;
        Ok(Self { cert, key })
    }

    fn load(dir: &Path) -> anyhow::Result<Self> {
        let pem = std::fs::read_to_string(dir.join("ca.key")).with_context(|| {
            format!(
                "reading {} (run `dev-ca init` first)",
                dir.join("ca.key").display()
            )
        })?;
        let key = KeyPair::from_pem(&pem)?;
        let cert = Self::params()?.self_signed(&key)?;
        Ok(Self { cert, key })
    }
}

fn init(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let ca = Ca::create()?;
    write(dir, "ca.pem", &ca.cert.pem())?;
    write(dir, "ca.key", &ca.key.serialize_pem())?;
    std::fs::write(dir.join("serials"), "")?;
    for (env, name) in ENVIRONMENTS {
        issue(
            dir,
            &ca,
            env,
            &[name.to_string(), name.to_ascii_lowercase()],
            false,
        )?;
    }
    write_crl(dir, &ca, &[])?;
    println!(
        "{}: CA, dev/stag/prod server certificates, empty crl.pem",
        dir.display()
    );
    Ok(())
}

/// Issues `NAME.pem` / `NAME.key`: a server certificate for `names`, or a
/// client certificate whose common name is `name`.
fn issue(dir: &Path, ca: &Ca, name: &str, names: &[String], client: bool) -> anyhow::Result<()> {
    let mut serials = read_serials(dir)?;
    let serial = serials.iter().map(|(_, s)| *s).max().unwrap_or(1) + 1;
    let mut params = CertificateParams::new(names.to_vec())?;
    let common_name = names.first().map_or(name, String::as_str);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.serial_number = Some(SerialNumber::from(serial));
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.cert, &ca.key)?;
    write(dir, &format!("{name}.pem"), &cert.pem())?;
    write(dir, &format!("{name}.key"), &key.serialize_pem())?;
    serials.retain(|(n, _)| n != name);
    serials.push((name.to_string(), serial));
    let text: String = serials.iter().map(|(n, s)| format!("{n} {s}\n")).collect();
    std::fs::write(dir.join("serials"), text)?;
    Ok(())
}

fn read_serials(dir: &Path) -> anyhow::Result<Vec<(String, u64)>> {
    let text = std::fs::read_to_string(dir.join("serials")).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (name, serial) = line
                .split_once(' ')
                .context("serials: `NAME SERIAL` per line")?;
            Ok((name.to_string(), serial.trim().parse()?))
        })
        .collect()
}

fn write_crl(dir: &Path, ca: &Ca, revoked: &[u64]) -> anyhow::Result<()> {
    let number = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let crl = CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2024, 1, 1),
        next_update: rcgen::date_time_ymd(2099, 1, 1),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|serial| RevokedCertParams {
                serial_number: SerialNumber::from(*serial),
                revocation_time: rcgen::date_time_ymd(2024, 1, 2),
                reason_code: Some(RevocationReason::Superseded),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca.cert, &ca.key)?;
    write(dir, "crl.pem", &crl.pem()?)
}

/// Writes aside and renames, so a host reloading at that moment never
/// reads half a file.
fn write(dir: &Path, file: &str, text: &str) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(file))?;
    Ok(())
}
