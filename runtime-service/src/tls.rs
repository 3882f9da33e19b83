//! Mutual TLS: which client identities may call the service.

use tonic::Request;

/// Why a client is not let in.
#[derive(Debug, thiserror::Error)]
pub enum ClientRejected {
    #[error("a client certificate is required")]
    NoCertificate,
    #[error("client identity {} is not allowed on this node", shown(names))]
    NotAllowed {
        /// The identities its certificate names.
        names: Vec<String>,
    },
}

fn shown(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_string()
    } else {
        names.join(", ")
    }
}

/// Refuses a client whose certificate names none of `allowed` (subject CN or a DNS
/// subject alternative name). An empty list allows every client the TLS layer
/// accepted (with a client CA configured, that is any certificate it signed).
pub fn check_client<T>(req: &Request<T>, allowed: &[String]) -> Result<(), ClientRejected> {
    if allowed.is_empty() {
        return Ok(());
    }
    let certs = req.peer_certs().ok_or(ClientRejected::NoCertificate)?;
    let leaf = certs.first().ok_or(ClientRejected::NoCertificate)?;
    let names = identities(leaf.as_ref());
    if names.iter().any(|n| allowed.iter().any(|a| a == n)) {
        Ok(())
    } else {
        Err(ClientRejected::NotAllowed { names })
    }
}

/// Subject common names and DNS alternative names of a DER certificate.
pub fn identities(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::*;
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(d) = name {
                names.push((*d).to_string());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_cn_and_dns_sans() {
        let mut params =
            rcgen::CertificateParams::new(vec!["backend.internal".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "backend-7");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let names = identities(cert.der());
        assert_eq!(names, ["backend-7", "backend.internal"]);
        assert!(identities(b"not a certificate").is_empty());
    }
}
