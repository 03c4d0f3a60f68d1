import Contracts
import Foundation
import Logging

/// The whole of a service's `main`: answers `--help`, reads the settings, runs the service.
/// A setting that can't be used stops the process with a message naming it (exit 2).
public enum ServiceMain {
    public static func run(
        _ service: ServiceName, extraSettingsHelp: String = "",
        _ definition: @escaping (ServiceSettings) throws -> ServiceDefinition
    ) async {
        let arguments = CommandLine.arguments.dropFirst()
        if arguments.contains("--help") || arguments.contains("-h") {
            print(help(for: service, extra: extraSettingsHelp))
            return
        }
        if let unknown = arguments.first {
            FileHandle.standardError.write(Data("unknown argument \(unknown); try --help\n".utf8))
            exit(2)
        }
        do {
            let settings = try ServiceSettings(service: service)
            // Once per process, and only here: bootstrapping twice traps.
            let observability = try Observability.bootstrap(service)
            LoggingSystem.bootstrap(
                { label, metadataProvider in
                    switch settings.logFormat {
                    case .json: JSONLogHandler(label: label, metadataProvider: metadataProvider)
                    case .text: StreamLogHandler.standardOutput(label: label, metadataProvider: metadataProvider)
                    }
                }, metadataProvider: observability.logMetadata)
            try await ServiceHost.run(try definition(settings), settings: settings, observability: observability)
        } catch let error as SettingsError {
            FileHandle.standardError.write(Data("\(service)-service: \(error)\n".utf8))
            exit(2)
        } catch {
            FileHandle.standardError.write(Data("\(service)-service stopped: \(error)\n".utf8))
            exit(1)
        }
    }

    static func help(for service: ServiceName, extra: String) -> String {
        let port = ServiceSettings.defaultPort(of: service), schema = ServiceSettings.defaultSchema(of: service)
        return """
            \(service)-service: Bazaar's \(service) service.

            Consumes its queue `\(service.queue)` and publishes to the `\(service.exchange)` exchange, keeps its
            state in the `\(schema)` schema, and serves its HTTP API. Configured by environment variables;
            the defaults match the local stack of `make run`.

              HTTP_HOST                 address to listen on                    [127.0.0.1]
              HTTP_PORT                 port of the HTTP API                    [\(port)]
              AMQP_URL                  the broker                              [amqp://bazaar:bazaar@127.0.0.1:5673/%2f]
              DATABASE_URL              the database                            [postgres://bazaar:bazaar@127.0.0.1:5433/bazaar]
              DATABASE_SCHEMA           the schema this service owns            [\(schema)]
              DATABASE_POOL_SIZE        database connections                    [8]
              AMQP_PREFETCH             deliveries sent ahead, per consumer     [128]
              CONSUMERS                 consumers on the queue, one batch each  [1]
              CONSUMER_BATCH_SIZE       deliveries applied in one transaction   [64]
              INSTANCE_NAME             name in broker connections and logs     [\(service)-<pid>]
              LOG_LEVEL                 trace … critical                        [info]
              LOG_FORMAT                text, or json (one object per line)     [text]
              OUTBOX_POLL_INTERVAL_MS   relay's fallback poll                   [1000]
              OUTBOX_RETENTION_HOURS    how long published events are kept      [168]
              AMQP_DECLARE_TOPOLOGY     all, or none when the broker has it     [all]
              RETRY_MAX_ATTEMPTS        handler tries before an event is parked [5]
              SHUTDOWN_TIMEOUT_SECONDS  time to finish work on SIGTERM/SIGINT   [10]
              AMQP_PUBLISHER_USERS      broker user of each service, s=user,…   [each service's name]
              AUTH_JWT_SECRET           key of the API's bearer tokens (HS256)  [required, ≥ 32 bytes]
            \(extra)
            A failing handler is retried after 1 s, 5 s, then every 30 s, and then parked in `\(service.deadLetterQueue)`.
            Observability: GET /metrics (Prometheus). Traces go over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set
            (e.g. http://localhost:4318; OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_TRACES_SAMPLER… as in
            every OpenTelemetry SDK); off by default.
            Health: GET /health/live, GET /health/ready. Stops gracefully on SIGTERM or SIGINT: no new requests
            or deliveries, in-flight work finished, the relay's last batch published, then connections closed.
            For the chaos suite only: BAZAAR_FAULTS=point=probability,… crashes the process on purpose.
            """
    }
}
