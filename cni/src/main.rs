//! The `mesh` CNI plugin binary: see the library for the protocol.

fn main() {
    // `vars()` panics on a variable that is not UTF-8 (any process may set
    // one); such a variable cannot be one of CNI's, so it is skipped.
    let env: std::collections::HashMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let mut stdin = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut stdin);
    let out = mesh_cni::run(&env, &stdin);
    if !out.stdout.is_empty() {
        println!("{}", out.stdout);
    }
    std::process::exit(out.exit_code);
}
