//! Links the plugin with `-z nodelete`: Mosquitto `dlclose`s plugins at shutdown, and the
//! runtime's threads (epoch ticker, alert workers, store writer) and Rust's thread-local
//! destructors must never find their code unmapped.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
