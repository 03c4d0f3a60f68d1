import Contracts

/// Where an order's reservation stands in inventory.
public enum ReservationStatus: String, Sendable, Codable {
    /// Units held for the order: `available` went down, `reserved` up.
    case reserved
    /// The order was confirmed: the units are sold (`reserved` back down, `available` stays down).
    case sold
    /// Given back after a cancellation.
    case released
    /// Not every line could be reserved, so none was.
    case rejected
    /// The order was cancelled before inventory saw it placed: a later OrderPlaced reserves nothing.
    case cancelledBeforePlaced = "cancelled_before_placed"
}

/// What inventory does about one saga event, given the order's reservation (`nil`: none yet).
public enum ReservationDecision: Sendable, Equatable {
    case reserve
    case reject(skus: [String])
    case sell
    /// Put the units back: from `reserved` (release) or from `sold` (restock after a refund).
    case putBack(from: ReservationStatus)
    case recordCancellation
    case ignore
}

/// Inventory's rules, with no I/O.
///
/// | reservation | OrderPlaced        | OrderConfirmed | OrderCancelled      |
/// |-------------|--------------------|----------------|---------------------|
/// | none        | reserve or reject  | ignore         | record cancellation |
/// | reserved    | ignore (duplicate) | sell           | put back            |
/// | sold        | ignore             | ignore         | put back (restock)  |
/// | others      | ignore             | ignore         | ignore              |
public enum ReservationRules {
    /// All lines or none: every line's sku must have at least its quantity available.
    public static func onPlaced(_ status: ReservationStatus?, lines: [StockLine], available: [String: Int]) -> ReservationDecision {
        guard status == nil else { return .ignore }
        let short = lines.filter { (available[$0.sku] ?? 0) < $0.quantity }.map(\.sku)
        return short.isEmpty ? .reserve : .reject(skus: short)
    }

    public static func onConfirmed(_ status: ReservationStatus?) -> ReservationDecision {
        status == .reserved ? .sell : .ignore
    }

    public static func onCancelled(_ status: ReservationStatus?) -> ReservationDecision {
        switch status {
        case nil: .recordCancellation
        case .reserved, .sold: .putBack(from: status!)
        case .released, .rejected, .cancelledBeforePlaced: .ignore
        }
    }
}
