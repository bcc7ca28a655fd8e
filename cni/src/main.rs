//! The `mesh` CNI plugin binary: see the library for the protocol.

fn main() {
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let mut stdin = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut stdin);
    let out = mesh_cni::run(&env, &stdin);
    if !out.stdout.is_empty() {
        println!("{}", out.stdout);
    }
    std::process::exit(out.exit_code);
}
