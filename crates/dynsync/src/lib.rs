//! dynsync: connects customer data to Microsoft Dynamics 365.

pub mod connection;
