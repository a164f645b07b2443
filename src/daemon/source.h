/* placeholder: declared by the sources helper */
