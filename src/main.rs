fn main() -> std::process::ExitCode {
    thanos_fanout::cli::main()
}
