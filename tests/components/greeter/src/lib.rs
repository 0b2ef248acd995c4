//! Exports `trellis:test/types`: a component other components call over a link.

wit_bindgen::generate!({ path: "../wit", world: "callee" });

use exports::trellis::test::types::{Color, Guest, Perms, Point, Shape};

struct Greeter;

impl Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello, {name}")
    }

    fn scale(p: Point, factor: i32) -> Point {
        Point { x: p.x * factor, y: p.y * factor, label: p.label.map(|l| format!("{l} x{factor}")) }
    }

    fn sum(values: Vec<u64>) -> u64 {
        values.iter().sum()
    }

    fn describe(s: Shape) -> String {
        match s {
            Shape::Circle(r) => format!("circle r={r}"),
            Shape::Rect(p) => format!("rect {}x{} {:?}", p.x, p.y, p.label),
            Shape::Empty => "empty".into(),
        }
    }

    fn find(items: Vec<String>, needle: String) -> Option<u32> {
        items.iter().position(|i| *i == needle).map(|i| i as u32)
    }

    fn checked_div(a: i32, b: i32) -> Result<i32, String> {
        a.checked_div(b).ok_or_else(|| format!("cannot divide {a} by {b}"))
    }

    fn mix(c: Color, p: Perms, pair: (u8, char), nested: Option<Option<bool>>) -> String {
        format!("{c:?} {p:?} {pair:?} {nested:?}")
    }

    fn reverse(mut data: Vec<u8>) -> Vec<u8> {
        data.reverse();
        data
    }

    fn spin(rounds: u32) -> u64 {
        let mut x = 0u64;
        for i in 0..u64::from(rounds) * 1_000_000 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        x
    }
}

export!(Greeter);
