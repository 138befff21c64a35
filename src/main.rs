fn main() {
    eprintln!("segvol: command line not yet wired");
    std::process::exit(2);
}
