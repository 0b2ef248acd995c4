//! An HTTP component that imports `trellis:test/types` and calls it: the callee is whatever
//! its link names, in process or on another host.
//!
//! - `/greet/<name>`: `greet(name)`
//! - `/all`: calls every function with fixed values and answers one line per call
//! - `/spin`: calls `spin`, which runs far longer than any deadline
//!
//! It also exports `trellis:test/bench.run(n)`, which times `n` calls of `greet` from inside.

wit_bindgen::generate!({ path: "../wit", world: "caller-world" });

use trellis::test::types::{self, Color, Perms, Point, Shape};
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Caller;

impl wasip2::exports::http::incoming_handler::Guest for Caller {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let body = if let Some(name) = path.strip_prefix("/greet/") {
            types::greet(name)
        } else if path == "/spin" {
            types::spin(100_000).to_string()
        } else {
            all()
        };
        let response = OutgoingResponse::new(Fields::new());
        let _ = response.set_status_code(200);
        let Ok(out) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(stream) = out.write() {
            let _ = stream.blocking_write_and_flush(body.as_bytes());
        }
        let _ = OutgoingBody::finish(out, None);
    }
}

fn all() -> String {
    let p = Point { x: 2, y: -3, label: Some("p".into()) };
    let lines = [
        types::greet("lattice"),
        format!("{:?}", types::scale(&p, 10)),
        types::sum(&[1, 2, u64::MAX - 3]).to_string(),
        types::describe(&Shape::Circle(1.5)),
        types::describe(&Shape::Rect(Point { x: 1, y: 2, label: None })),
        types::describe(&Shape::Empty),
        format!("{:?}", types::find(&["a".into(), "b".into()], "b")),
        format!("{:?}", types::find(&[], "z")),
        format!("{:?}", types::checked_div(7, 2)),
        format!("{:?}", types::checked_div(1, 0)),
        types::mix(Color::Blue, Perms::READ | Perms::EXEC, (7, 'λ'), Some(None)),
        format!("{:?}", types::reverse(&[1, 2, 3])),
    ];
    lines.join("\n")
}

impl exports::trellis::test::bench::Guest for Caller {
    fn run(n: u32) -> Vec<u64> {
        use wasip2::clocks::monotonic_clock::now;
        (0..n)
            .map(|_| {
                let start = now();
                std::hint::black_box(types::greet("x"));
                now() - start
            })
            .collect()
    }
}

wasip2::http::proxy::export!(Caller);
export!(Caller);
