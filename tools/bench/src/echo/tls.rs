//! The benchmark's certificates (`rpc --tls`).

/// The benchmark's certificates: a CA, the server's and the client's (`rpc --tls`), in
/// `dir` as `ca.crt`, `server.crt`/`server.key`, `client.crt`/`client.key`.
pub(crate) struct TlsFiles {
    pub(crate) dir: std::path::PathBuf,
}

impl TlsFiles {
    /// Makes them in a fresh temporary directory.
    pub(crate) fn make() -> anyhow::Result<TlsFiles> {
        let dir = std::env::temp_dir().join(format!("svrkit-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let ca = svrkit::tls::mint::ClusterCa::new("bench")?;
        std::fs::write(dir.join("ca.crt"), ca.cert_pem())?;
        for name in ["server", "client"] {
            let issued = ca.issue(name)?;
            std::fs::write(dir.join(format!("{name}.crt")), issued.cert_pem)?;
            std::fs::write(dir.join(format!("{name}.key")), issued.key_pem)?;
        }
        Ok(TlsFiles { dir })
    }

    pub(crate) fn read(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        Ok(std::fs::read(self.dir.join(name))?)
    }

    /// svrkit credentials of `who` (`server` or `client`).
    pub(crate) fn svrkit(&self, who: &str) -> anyhow::Result<svrkit::tls::Credentials> {
        Ok(svrkit::tls::Credentials::from_pem(
            &self.read(&format!("{who}.crt"))?,
            &self.read(&format!("{who}.key"))?,
            &self.read("ca.crt")?,
        )?)
    }

    /// tonic's identity of `who` and the CA.
    pub(crate) fn tonic(
        &self,
        who: &str,
    ) -> anyhow::Result<(tonic::transport::Identity, tonic::transport::Certificate)> {
        Ok((
            tonic::transport::Identity::from_pem(
                self.read(&format!("{who}.crt"))?,
                self.read(&format!("{who}.key"))?,
            ),
            tonic::transport::Certificate::from_pem(self.read("ca.crt")?),
        ))
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
