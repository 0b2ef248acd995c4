//! A `wasmcloud:messaging` component: handles messages from its subscriptions and answers
//! through the consumer interface.
//!
//! - `app.ping` with a reply subject: publishes `pong: <body>` to it
//! - `app.ask` with a reply subject: requests `app.service` with the body, publishes
//!   `asked: <answer>` to the reply subject

wit_bindgen::generate!({
    path: "../../../providers/messaging-nats/wit",
    world: "wasmcloud:messaging/messenger",
});

use exports::wasmcloud::messaging::handler::Guest;
use wasmcloud::messaging::consumer;
use wasmcloud::messaging::types::BrokerMessage;

struct Messenger;

impl Guest for Messenger {
    fn handle_message(msg: BrokerMessage) -> Result<(), String> {
        let Some(reply_to) = msg.reply_to else { return Err("no reply subject".into()) };
        let body = match msg.subject.as_str() {
            "app.ping" => [b"pong: ".as_slice(), &msg.body].concat(),
            "app.ask" => {
                let answer = consumer::request("app.service", &msg.body, 2000)?;
                [b"asked: ".as_slice(), &answer.body].concat()
            }
            other => return Err(format!("unexpected subject {other}")),
        };
        consumer::publish(&BrokerMessage { subject: reply_to, body, reply_to: None })
    }
}

export!(Messenger);
