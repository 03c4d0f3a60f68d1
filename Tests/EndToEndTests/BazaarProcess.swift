import Foundation
import TestSupport

/// Runs the built `bazaar` against `system` (its URLs, virtual host and schemas), and returns
/// its exit status and output (standard output and error together).
func bazaar(
    _ system: RunningSystem?, _ arguments: [String], environment extra: [String: String] = [:]
) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = RunningSystem.binDirectory.appendingPathComponent("bazaar")
    process.arguments = arguments
    var environment = ProcessInfo.processInfo.environment
    environment["BAZAAR_RUN_DIR"] = "/nonexistent"  // only what we set here
    if let system {
        environment["AMQP_URL"] = system.vhost.amqpURL
        environment["DATABASE_URL"] = try StackEnvironment.databaseURL
        environment["AUTH_JWT_SECRET"] = TestTokens.secret
        // As for the services: the admin of the test's virtual host publishes for all of them.
        let user = URLComponents(string: system.vhost.amqpURL)?.user ?? "bazaar"
        environment["AMQP_PUBLISHER_USERS"] = RunningSystem.Service.allCases.map { "\($0.rawValue)=\(user)" }.joined(separator: ",")
        for service in RunningSystem.Service.allCases {
            environment["\(service.rawValue.uppercased())_URL"] = system.url(service)
            environment["\(service.rawValue.uppercased())_SCHEMA"] = system.schema(service)
        }
    }
    environment.merge(extra) { $1 }
    process.environment = environment
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    // A hung command must fail the test, not hang the run: stop it after two minutes.
    let watchdog = DispatchWorkItem { if process.isRunning { process.terminate() } }
    DispatchQueue.global().asyncAfter(deadline: .now() + 120, execute: watchdog)
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    watchdog.cancel()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}
