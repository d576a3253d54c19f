//! A selection of the most dangerous cases again, applied through the confined helper
//! (`--confined-apply`, what the Docker plugin uses): the same oracle, the same pinned
//! results and error messages.

use super::oracle::use_confined_apply;

macro_rules! confined {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod vfs {
            $(
                #[test]
                fn $name() {
                    super::use_confined_apply();
                    crate::$module::$name("vfs");
                }
            )*
        }
        mod overlay {
            $(
                #[test]
                fn $name() {
                    super::use_confined_apply();
                    crate::$module::$name("overlay");
                }
            )*
        }
    };
}

confined!(
    symlinks::write_through_symlink_to_slash_stays_in_root,
    symlinks::directory_replaces_symlink_to_a_host_directory,
    symlinks::two_hop_symlink_chain_stays_in_root,
    hardlinks::hardlink_to_absolute_host_paths_is_refused,
    hardlinks::hardlink_to_a_lower_layer_file_copies_it_up,
    lower::write_through_lower_symlink_to_the_victim_stays_in_root,
    lower::whiteout_through_lower_symlink_stays_in_root,
    lower::opaque_through_lower_symlink_stays_in_root,
    whiteouts::opaque_at_the_root_hides_every_lower_entry,
    types::directory_with_subdirectories_then_file_of_the_same_name,
    parser::pax_size_wins_when_ustar_says_zero,
    parser::truncated_mid_data_is_refused,
    names::root_as_symlink_to_the_victim_is_refused,
    names::dotdot_names_at_every_depth_are_refused,
    special::user_xattrs_on_special_files_are_dropped,
    special::whiteout_device_in_a_tar_is_refused,
    replaced::directory_replaces_symlink_used_as_parent,
    replaced::directory_replaces_lower_symlink_used_as_parent,
    replaced::many_small_files_after_symlink_replaced_by_directory,
);
