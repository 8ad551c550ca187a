//! Entry point of the `node_control` fuzz target and of the test that
//! replays its corpus: both ends of the control socket's protocol on
//! arbitrary bytes.
//!
//! The node reads one line and parses it as a [`Request`]; the CLI reads
//! one line back, parses it as a [`Response`] and prints it as a table or
//! as JSON. Neither may panic on any line, and what parses must encode and
//! parse again to the same thing.

use super::api::{Request, Response};
use super::server::{encode_response, parse_request};
use super::table;

/// Feeds `data` to both ends.
pub fn control_socket(data: &[u8]) {
    // The node's side: a request, or an error answer that encodes.
    match parse_request(data) {
        Ok(req) => {
            let again = serde_json::to_vec(&req).expect("a request encodes");
            let back: Request = serde_json::from_slice(&again).expect("an encoded request parses");
            assert_eq!(back, req, "request round trip");
        }
        Err(answer) => {
            let line = encode_response(&answer);
            assert!(serde_json::from_slice::<Response>(&line).is_ok());
        }
    }
    // The CLI's side: whatever a node (or something else) answered.
    if let Ok(resp) = serde_json::from_slice::<Response>(data) {
        let text = match &resp {
            Response::Status(x) => table::status(x),
            Response::Tunnels(x) => table::tunnels(x),
            Response::Routes(x) => table::routes(x),
            Response::Peers(x) => table::peers(x),
            Response::Joining(x) => table::joining(x),
            Response::Metrics(x) | Response::Error(x) => x.clone(),
        };
        let _ = text;
        let line = encode_response(&resp);
        let back: Response = serde_json::from_slice(&line).expect("an encoded answer parses");
        assert_eq!(
            serde_json::to_value(&back).ok(),
            serde_json::to_value(&resp).ok(),
            "answer round trip"
        );
    }
}
