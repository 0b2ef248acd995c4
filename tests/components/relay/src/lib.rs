//! Imports and exports `trellis:test/types`, passing each call on to whatever its link names:
//! linked to another relay that is linked back, it makes a cycle of calls (A calls B calls A).

wit_bindgen::generate!({ path: "../wit", world: "relay" });

use exports::trellis::test::types::{Color, Guest, Perms, Point, Shape};
use trellis::test::types as next;

struct Relay;

impl Guest for Relay {
    fn greet(name: String) -> String {
        next::greet(&name)
    }

    fn scale(p: Point, factor: i32) -> Point {
        let q = next::scale(&next::Point { x: p.x, y: p.y, label: p.label }, factor);
        Point { x: q.x, y: q.y, label: q.label }
    }

    fn sum(values: Vec<u64>) -> u64 {
        next::sum(&values)
    }

    fn describe(s: Shape) -> String {
        let s = match s {
            Shape::Circle(r) => next::Shape::Circle(r),
            Shape::Rect(p) => next::Shape::Rect(next::Point { x: p.x, y: p.y, label: p.label }),
            Shape::Empty => next::Shape::Empty,
        };
        next::describe(&s)
    }

    fn find(items: Vec<String>, needle: String) -> Option<u32> {
        next::find(&items, &needle)
    }

    fn checked_div(a: i32, b: i32) -> Result<i32, String> {
        next::checked_div(a, b)
    }

    fn mix(c: Color, p: Perms, pair: (u8, char), nested: Option<Option<bool>>) -> String {
        format!("relayed {c:?} {p:?} {pair:?} {nested:?}")
    }

    fn reverse(data: Vec<u8>) -> Vec<u8> {
        next::reverse(&data)
    }

    fn spin(rounds: u32) -> u64 {
        next::spin(rounds)
    }
}

export!(Relay);
