//! Error helpers shared by the daemons' HTTP clients (Redfish, grid APIs).

/// An error and its causes, `: `-separated, each cause once.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// The rustls error under an HTTP error, looking inside the `io::Error`s
/// that the connector wraps it in (their `source()` skips a level).
pub fn rustls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut err = e;
    loop {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => err = inner,
            None => err = err.source()?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_chained_once_and_tls_errors_found_inside_io() {
        let tls = std::io::Error::other(rustls::Error::General("bad cert".into()));
        let outer = std::io::Error::other(tls);
        assert!(matches!(
            rustls_cause(&outer),
            Some(rustls::Error::General(_))
        ));
        assert!(chain(&outer).contains("bad cert"));
        let plain = std::io::Error::other("refused");
        assert!(rustls_cause(&plain).is_none());
        assert_eq!(chain(&plain), "refused");
    }
}
