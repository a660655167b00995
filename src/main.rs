//! The offpeak server binary. Until the server lands it prints its version and usage.

fn main() {
    println!("offpeak {}", env!("CARGO_PKG_VERSION"));
    println!("usage: offpeak [serve]   (the server arrives with the server issue)");
}
