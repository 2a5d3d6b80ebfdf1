fn main() {
    println!("cargo:rerun-if-changed=proto/cachenet.proto");
    let fds =
        protox::compile(["cachenet.proto"], ["proto"]).expect("proto/cachenet.proto must compile");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("prost code generation");
}
