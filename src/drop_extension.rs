//! DROP EXTENSION: is it bondhu that is being dropped? (sql/uninstall.sql)
use pgrx::prelude::*;

/// Does this ddl_command_start event run a DROP EXTENSION that names bondhu? Any
/// other DROP EXTENSION is none of bondhu's business.
///
/// # Safety
///
/// `fcinfo` is the FunctionCallInfo of the current call of a C function (its
/// context, when set, a node).
pub unsafe fn drops_bondhu(fcinfo: pg_sys::FunctionCallInfo) -> bool {
    // SAFETY: fcinfo is this call's (the caller's promise); an event trigger's context
    // is EventTriggerData (checked by its node tag), whose parse tree lives for the
    // command; each node is checked by its tag before it is cast.
    unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || !pgrx::is_a(context, pg_sys::NodeTag::T_EventTriggerData) {
            return false;
        }
        let tree = (*context.cast::<pg_sys::EventTriggerData>()).parsetree;
        if tree.is_null() || !pgrx::is_a(tree, pg_sys::NodeTag::T_DropStmt) {
            return false;
        }
        let drop = tree.cast::<pg_sys::DropStmt>();
        if (*drop).removeType != pg_sys::ObjectType::OBJECT_EXTENSION {
            return false;
        }
        pgrx::PgList::<pg_sys::Node>::from_pg((*drop).objects)
            .iter_ptr()
            .any(|name| {
                pgrx::is_a(name, pg_sys::NodeTag::T_String)
                    && std::ffi::CStr::from_ptr((*name.cast::<pg_sys::String>()).sval).to_bytes()
                        == b"bondhu"
            })
    }
}
