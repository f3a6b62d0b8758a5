//! Reads the URI subject alternative names of an X.509 certificate (DER), which is where
//! a svrkit certificate names its service: `spiffe://CLUSTER/service/NAME`.
//!
//! Only called on certificates the TLS handshake has already verified against the
//! cluster CA; still, every length is checked and nothing panics on any input.

/// `2.5.29.17`, subjectAltName.
const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];

/// One DER element: its tag and contents, and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The elements of a constructed value's contents.
fn children(mut contents: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (tag, value, rest) = element(contents)?;
        contents = rest;
        Some((tag, value))
    })
}

/// Every URI in the certificate's subjectAltName extension (none if it has none or the
/// DER does not parse).
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    uri_sans_inner(der).unwrap_or_default()
}

fn uri_sans_inner(der: &[u8]) -> Option<Vec<String>> {
    let (_, certificate, _) = element(der)?;
    let (_, tbs, _) = element(certificate)?;
    // tbsCertificate's last optional field, [3] extensions.
    let (_, extensions) = children(tbs).find(|(tag, _)| *tag == 0xa3)?;
    let (_, list, _) = element(extensions)?;
    for (_, extension) in children(list) {
        let mut fields = children(extension);
        let (_, oid) = fields.next()?;
        if oid != SAN_OID {
            continue;
        }
        // An optional `critical` BOOLEAN, then the OCTET STRING holding the names.
        let value = fields.find(|(tag, _)| *tag == 0x04)?.1;
        let (_, names, _) = element(value)?;
        return Some(
            children(names)
                // uniformResourceIdentifier [6] IMPLICIT IA5String
                .filter(|(tag, _)| *tag == 0x86)
                .filter_map(|(_, uri)| std::str::from_utf8(uri).ok().map(str::to_string))
                .collect(),
        );
    }
    Some(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_uri_names_of_a_real_certificate() {
        let mut params =
            rcgen::CertificateParams::new(vec!["svrkit.cluster".to_string()]).expect("params");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://test/service/account".try_into().expect("ia5"),
        ));
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(
            uri_sans(cert.der()),
            vec!["spiffe://test/service/account".to_string()]
        );
    }

    #[test]
    fn garbage_and_truncations_yield_nothing_without_panicking() {
        assert!(uri_sans(&[]).is_empty());
        assert!(uri_sans(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_empty());
        let params = rcgen::CertificateParams::new(vec!["x".to_string()]).expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let der = params.self_signed(&key).expect("cert").der().to_vec();
        for cut in 0..der.len() {
            let _ = uri_sans(&der[..cut]);
        }
        assert!(uri_sans(&der).is_empty(), "a certificate without URI names");
    }
}
