// swift-tools-version: 6.1
// Bazaar: event-driven microservices over RabbitMQ and PostgreSQL.
//
// Folders follow the design rather than SwiftPM's defaults:
//   Shared/    the modules every service uses (C bindings, AMQP client, Postgres layer)
//   Services/  the four services (order, payment, inventory, notification)
//   Tests/     one target per module, integration tests against the real broker and database
import PackageDescription

let package = Package(
    name: "Bazaar",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "order-service", targets: ["OrderMain"]),
        .executable(name: "inventory-service", targets: ["InventoryMain"]),
        .executable(name: "payment-service", targets: ["PaymentMain"]),
        .executable(name: "notification-service", targets: ["NotificationMain"]),
        .executable(name: "bazaar", targets: ["BazaarCLI"]),
        .library(name: "Contracts", targets: ["Contracts"]),
        .library(name: "AMQP", targets: ["AMQP"]),
        .library(name: "EventRuntime", targets: ["EventRuntime"]),
        .library(name: "Postgres", targets: ["Postgres"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        // HTTP APIs: the Swift server ecosystem's framework, on SwiftNIO (and its service lifecycle).
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        // The bazaar command-line tool: argument parsing, and latency percentiles for `bazaar load`.
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        // Bearer tokens (JWT) for the HTTP APIs: signing and verifying is not something to hand-roll.
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        // Observability: the ecosystem's metrics and tracing APIs (Hummingbird already brings both),
        // a Prometheus backend for `GET /metrics`, and an OTLP exporter for traces — over HTTP only:
        // the gRPC exporter would add grpc-swift to every build.
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-otel/swift-otel.git", from: "1.6.0", traits: ["OTLPHTTP"]),
        // Notification webhooks: outbound HTTP with timeouts, and HMAC-SHA256 signatures (swift-crypto
        // is already in the graph through jwt-kit).
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        // Already under Hummingbird and AsyncHTTPClient; named for the CLI's HTTP client's types.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", "4.0.0"..<"5.0.0"),
    ],
    targets: [
        // C bindings: librabbitmq and libpq from Debian's -dev packages, and the one C function
        // Swift can't call directly (amqp_login is variadic).
        .systemLibrary(
            name: "CRabbitMQ", path: "Shared/CRabbitMQ", pkgConfig: "librabbitmq",
            providers: [.apt(["librabbitmq-dev"])]),
        .target(name: "CAMQPShim", dependencies: ["CRabbitMQ"], path: "Shared/CAMQPShim"),
        .systemLibrary(
            name: "CLibPQ", path: "Shared/CLibPQ", pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]),

        // Our Swift layers over them.
        .target(
            name: "AMQP",
            dependencies: ["CRabbitMQ", "CAMQPShim", .product(name: "Logging", package: "swift-log")],
            path: "Shared/AMQP"),
        .target(
            name: "Postgres",
            dependencies: ["CLibPQ", .product(name: "Logging", package: "swift-log")],
            path: "Shared/Postgres"),

        // The events the services exchange: Swift types, JSON Schemas and stored samples.
        .target(name: "Contracts", path: "Shared/Contracts", resources: [.copy("Schemas"), .copy("Samples")]),

        // Outbox, inbox, relay, consumer loop and dead-lettering: written once, used by every service.
        .target(
            name: "EventRuntime",
            dependencies: [
                "AMQP", "Postgres", "Contracts", .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            path: "Shared/EventRuntime"),

        // Bearer tokens of the HTTP APIs: issued by the CLI (and the local stack), verified by services.
        .target(name: "Auth", dependencies: [.product(name: "JWTKit", package: "jwt-kit")], path: "Shared/Auth"),
        // What every service shares around its own code: configuration from the environment,
        // problem+json errors, health endpoints, and the start-up that wires database, broker,
        // relay, consumer and HTTP server together with graceful shutdown.
        .target(
            name: "ServiceKit",
            dependencies: [
                "EventRuntime", "AMQP", "Postgres", "Contracts", "Auth",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "OTel", package: "swift-otel"),
            ],
            path: "Shared/ServiceKit"),

        // The services: a library each (domain, handlers, API, migrations) and a screenful of main.
        .target(
            name: "OrderService", dependencies: ["ServiceKit", .product(name: "Metrics", package: "swift-metrics")],
            path: "Services/Order/OrderService",
            resources: [.copy("Migrations"), .copy("API/openapi.json")]),
        .executableTarget(name: "OrderMain", dependencies: ["OrderService", "ServiceKit"], path: "Services/Order/Main"),
        .target(
            name: "InventoryService", dependencies: ["ServiceKit"], path: "Services/Inventory/InventoryService",
            resources: [.copy("Migrations")]),
        .executableTarget(
            name: "InventoryMain", dependencies: ["InventoryService", "ServiceKit"], path: "Services/Inventory/Main"),
        .target(
            name: "PaymentService", dependencies: ["ServiceKit"], path: "Services/Payment/PaymentService",
            resources: [.copy("Migrations")]),
        .executableTarget(name: "PaymentMain", dependencies: ["PaymentService", "ServiceKit"], path: "Services/Payment/Main"),
        .target(
            name: "NotificationService",
            dependencies: [
                "ServiceKit", .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Services/Notification/NotificationService",
            resources: [.copy("Migrations")]),
        .executableTarget(
            name: "NotificationMain", dependencies: ["NotificationService", "ServiceKit"], path: "Services/Notification/Main"),

        // The bazaar command-line tool.
        .executableTarget(
            name: "BazaarCLI",
            dependencies: [
                "AMQP", "Postgres", "Contracts", "Auth", "EventRuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
            ],
            path: "Services/CLI/bazaar"),

        // Tests. Integration tests need the local stack (`make test` starts it).
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "AMQPTests", dependencies: ["AMQP", "TestSupport"], path: "Tests/AMQPTests"),
        .testTarget(name: "ContractsTests", dependencies: ["Contracts", "TestSupport"], path: "Tests/ContractsTests"),
        .testTarget(
            name: "EventRuntimeTests", dependencies: ["EventRuntime", "TestSupport"], path: "Tests/EventRuntimeTests"),
        .testTarget(
            name: "DomainTests",
            dependencies: [
                "OrderService", "InventoryService", "PaymentService", "NotificationService", "ServiceKit", "EventRuntime",
                "Contracts",
            ],
            path: "Tests/DomainTests"),
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "TestSupport", "Contracts", "AMQP", "Postgres", "Auth",
                // Built for their executables, which the tests start as real processes.
                "OrderMain", "InventoryMain", "PaymentMain", "NotificationMain", "BazaarCLI",
                // The webhook receiver the tests start, which checks signatures as a customer's would, and
                // a stand-in OpenTelemetry collector (ObservabilityTests).
                .product(name: "Hummingbird", package: "hummingbird"), .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Tests/EndToEndTests", exclude: ["schemathesis.toml"]),
        .testTarget(
            name: "DeployTests",
            dependencies: ["TestSupport", "AMQP", "Postgres", "Contracts", "EventRuntime", "OrderService", "PaymentService"],
            path: "Tests/DeployTests"),
        .testTarget(name: "LocalStackTests", dependencies: ["TestSupport", "AMQP", "Postgres"], path: "Tests/LocalStackTests"),
        .testTarget(
            name: "PostgresTests", dependencies: ["Postgres", "TestSupport"], path: "Tests/PostgresTests",
            resources: [.copy("Fixtures")]),
    ]
)
