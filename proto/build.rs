//! Compiles `client.proto` and `cluster.proto` with protox (pure Rust, no
//! system `protoc`) and generates prost types into `OUT_DIR`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let schemas = ["client.proto", "cluster.proto"];
    for schema in schemas {
        println!("cargo:rerun-if-changed={schema}");
    }
    let descriptors = protox::compile(schemas, ["."])?;
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
