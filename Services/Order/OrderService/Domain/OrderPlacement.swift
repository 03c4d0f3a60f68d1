import Contracts

/// A line as the customer asked for it, before pricing.
public struct RequestedItem: Sendable, Equatable, Codable {
    public var sku: String
    public var quantity: Int

    public init(sku: String, quantity: Int) {
        self.sku = sku
        self.quantity = quantity
    }
}

/// Why an order can't be placed as asked.
public enum OrderRequestProblem: Error, Sendable, Equatable, CustomStringConvertible {
    /// A field is malformed or out of its range (HTTP 400).
    case invalid(String)
    /// Every field is fine, but together they break a rule: the lines of one sku add up to more
    /// than a line may hold (HTTP 422).
    case tooMuch(sku: String)
    /// Not in the catalogue (HTTP 422).
    case unknownSkus([String])

    public var description: String {
        switch self {
        case .invalid(let detail): detail
        case .tooMuch(let sku): "the lines of \(sku) add up to more than \(OrderPlacement.quantityRange.upperBound)"
        case .unknownSkus(let skus): "unknown sku: \(skus.joined(separator: ", "))"
        }
    }
}

/// Checks an order request and prices it from the order service's copy of the catalogue.
public enum OrderPlacement {
    public static let maximumLines = 100
    public static let quantityRange = 1...1_000
    public static let maximumCustomerIdLength = 128

    /// Validates the request and merges repeated skus (their quantities add up).
    public static func validate(customerId: String, items: [RequestedItem]) throws(OrderRequestProblem) -> [RequestedItem] {
        guard !customerId.isEmpty, customerId.unicodeScalars.count <= maximumCustomerIdLength, !customerId.containsControlCharacters else {
            throw .invalid("customerId must be 1 to \(maximumCustomerIdLength) characters, without control characters")
        }
        guard !items.isEmpty else { throw .invalid("an order needs at least one item") }
        guard items.count <= maximumLines else { throw .invalid("an order has at most \(maximumLines) items") }
        var merged: [RequestedItem] = []
        for item in items {
            guard SkuFormat.isValid(item.sku) else { throw .invalid("invalid sku \"\(item.sku)\": \(SkuFormat.description)") }
            guard quantityRange.contains(item.quantity) else {
                throw .invalid("quantity of \(item.sku) must be between \(quantityRange.lowerBound) and \(quantityRange.upperBound)")
            }
            if let index = merged.firstIndex(where: { $0.sku == item.sku }) {
                merged[index].quantity += item.quantity
                guard quantityRange.contains(merged[index].quantity) else { throw .tooMuch(sku: item.sku) }
            } else {
                merged.append(item)
            }
        }
        return merged
    }

    /// Prices validated items: every sku must be in the catalogue.
    public static func price(_ items: [RequestedItem], prices: [String: Int]) throws(OrderRequestProblem) -> (lines: [OrderLine], total: Int) {
        let unknown = items.map(\.sku).filter { prices[$0] == nil }
        guard unknown.isEmpty else { throw .unknownSkus(unknown) }
        let lines = items.map { OrderLine(sku: $0.sku, quantity: $0.quantity, unitPrice: prices[$0.sku]!) }
        return (lines, lines.reduce(0) { $0 + $1.quantity * $1.unitPrice })
    }
}
