//! `#[entity]`: an `impl` block of operation methods becomes a registered entity type.
//!
//! ```text
//! #[entity]
//! impl Counter {
//!     /// Adds to the counter; returns the new value.
//!     pub fn add(&mut self, ctx: &mut EntityContext, amount: i64) -> Result<i64, Failure> { … }
//!     pub fn reset(&mut self, ctx: &mut EntityContext) -> Result<(), Failure> { … }
//! }
//! ```
//!
//! expands to `impl Entity for Counter` (`NAME = "Counter"`), and per method an operation type in
//! a module named after the entity (`counter::Add(pub i64)`, `counter::Reset`; the method's
//! inputs are its fields, its `Ok` type the output, its name the operation's name), a
//! constructor of the addressed request with the method's name (`Counter::add(&key, 5)`, what
//! `ctx.call_entity` and `signal_entity` take), and `Counter::operations()`, the builder to
//! register (`registry.entity(Counter::operations())`). The method bodies move to private
//! methods the operations call. Arguments: `name = "…"` and `crate = path`, as for
//! `#[orchestration]`.

use proc_macro2::TokenStream as Tokens;
use quote::{format_ident, quote};
use syn::{FnArg, ImplItem, ImplItemFn, ItemImpl, LitStr, Pat, Type, spanned::Spanned};

use crate::{Args, camel_case, ok_type};

/// One operation method, read.
struct Method<'a> {
    item: &'a ImplItemFn,
    /// The operation's type name (`Add`).
    ident: syn::Ident,
    /// Inputs after `&mut self` and the context: (pattern, type).
    inputs: Vec<(&'a Pat, &'a Type)>,
    output: &'a Type,
}

pub fn expand(args: Args, item: ItemImpl) -> syn::Result<Tokens> {
    if let Some(extra) = args
        .version
        .as_ref()
        .map(|v| v.span())
        .or(args.validate.as_ref().map(|p| p.span()))
        .or(args.limiter.as_ref().map(|l| l.span()))
        .or(args.breaker.as_ref().map(|b| b.span()))
        .or(args.concurrency.as_ref().map(|c| c.span()))
    {
        return Err(syn::Error::new(
            extra,
            "an entity takes only `name` and `crate`",
        ));
    }
    if item.trait_.is_some() || !item.generics.params.is_empty() {
        return Err(syn::Error::new(
            item.impl_token.span(),
            "expected a plain `impl Entity { … }` block without generics",
        ));
    }
    let Type::Path(self_path) = &*item.self_ty else {
        return Err(syn::Error::new(item.self_ty.span(), "expected a type name"));
    };
    let entity = &self_path
        .path
        .segments
        .last()
        .ok_or_else(|| syn::Error::new(self_path.span(), "expected a type name"))?
        .ident;
    let krate = args.krate.unwrap_or_else(|| syn::parse_quote!(::engine));
    let name = args
        .name
        .unwrap_or_else(|| LitStr::new(&entity.to_string(), entity.span()));
    let module = format_ident!("{}", snake_case(&entity.to_string()), span = entity.span());
    let methods = item
        .items
        .iter()
        .map(|i| match i {
            ImplItem::Fn(f) => method(f),
            other => Err(syn::Error::new(
                other.span(),
                "an #[entity] block holds only operation methods",
            )),
        })
        .collect::<syn::Result<Vec<_>>>()?;
    if methods.is_empty() {
        return Err(syn::Error::new(
            item.impl_token.span(),
            "an entity needs at least one operation",
        ));
    }
    let mut types = Vec::new();
    let mut bodies = Vec::new();
    let mut constructors = Vec::new();
    let mut registrations = Vec::new();
    for m in &methods {
        let ImplItemFn {
            attrs,
            vis,
            sig,
            block,
            ..
        } = m.item;
        let op = &m.ident;
        let op_name = LitStr::new(&sig.ident.to_string(), sig.ident.span());
        let hidden = format_ident!("__operation_{}", sig.ident);
        let output = m.output;
        let ctx = match sig.inputs.iter().nth(1) {
            Some(FnArg::Typed(ctx)) => ctx,
            _ => unreachable!("checked in `method`"),
        };
        let (ctx_pat, ctx_ty) = (&ctx.pat, &ctx.ty);
        let pats: Vec<&Pat> = m.inputs.iter().map(|(p, _)| *p).collect();
        let tys: Vec<&Type> = m.inputs.iter().map(|(_, t)| *t).collect();
        let fields: Vec<syn::Ident> = (0..tys.len()).map(|i| format_ident!("a{i}")).collect();
        let doc = format!(
            "The `{}` operation of [`super::{entity}`]: its fields are the inputs of `{entity}::{}`.",
            sig.ident, sig.ident
        );
        let (shape, destructure) = if tys.is_empty() {
            (quote!(;), quote!(let _ = self;))
        } else {
            (
                quote!((#(pub #tys),*);),
                quote!(let #op(#(#fields),*) = self;),
            )
        };
        types.push(quote! {
            #[doc = #doc]
            #[derive(Debug, Clone, ::serde::Serialize, ::serde::Deserialize)]
            pub struct #op #shape

            impl #krate::entity::Operation for #op {
                type Entity = super::#entity;
                const NAME: &'static str = #op_name;
                type Output = #output;
                fn apply(
                    self,
                    state: &mut super::#entity,
                    ctx: &mut #krate::entity::EntityContext,
                ) -> ::core::result::Result<#output, #krate::Failure> {
                    #destructure
                    state.#hidden(ctx, #(#fields),*)
                }
            }
        });
        bodies.push(quote! {
            #[allow(clippy::too_many_arguments)]
            fn #hidden(&mut self, #ctx_pat: #ctx_ty, #(#pats: #tys),*) -> ::core::result::Result<#output, #krate::Failure> #block
        });
        let params: Vec<syn::Ident> = (0..tys.len()).map(|i| format_ident!("input{i}")).collect();
        let build = if tys.is_empty() {
            quote!(#module::#op)
        } else {
            quote!(#module::#op(#(#params),*))
        };
        let fn_name = &sig.ident;
        constructors.push(quote! {
            #(#attrs)*
            #vis fn #fn_name(
                key: &#krate::entity::EntityKey<#entity>,
                #(#params: #tys),*
            ) -> #krate::entity::EntityRequest<#module::#op> {
                #krate::entity::EntityRequest::new(key, #build)
            }
        });
        registrations.push(quote!(.operation::<#module::#op>()));
    }
    let module_doc =
        format!("The operations of [`{entity}`], one type each (generated by `#[entity]`).");
    Ok(quote! {
        impl #krate::entity::Entity for #entity {
            const NAME: &'static str = #name;
        }

        impl #entity {
            #(#constructors)*

            /// Every operation of this entity, to register:
            /// `registry.entity(Self::operations())`.
            pub fn operations() -> #krate::entity::EntityBuilder<#entity> {
                #krate::entity::EntityBuilder::<#entity>::default() #(#registrations)*
            }

            #(#bodies)*
        }

        #[doc = #module_doc]
        pub mod #module {
            #[allow(unused_imports)]
            use super::*;
            #(#types)*
        }
    })
}

/// Reads one operation method: `fn name(&mut self, ctx: &mut EntityContext, inputs…) ->
/// Result<Out, Failure>`.
fn method(f: &ImplItemFn) -> syn::Result<Method<'_>> {
    let sig = &f.sig;
    if sig.asyncness.is_some() || !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.span(),
            "an operation is a plain, synchronous, non-generic method",
        ));
    }
    let mut inputs = sig.inputs.iter();
    let is_mut_self = matches!(inputs.next(), Some(FnArg::Receiver(r)) if r.mutability.is_some() && r.reference.is_some());
    let has_ctx = matches!(inputs.next(), Some(FnArg::Typed(_)));
    if !is_mut_self || !has_ctx {
        return Err(syn::Error::new(
            sig.inputs.span(),
            "an operation takes `&mut self`, then the `&mut EntityContext`, then its inputs",
        ));
    }
    let inputs = inputs
        .map(|arg| match arg {
            FnArg::Typed(t) => Ok((&*t.pat, &*t.ty)),
            FnArg::Receiver(r) => Err(syn::Error::new(r.span(), "unexpected receiver")),
        })
        .collect::<syn::Result<Vec<_>>>()?;
    Ok(Method {
        item: f,
        ident: syn::Ident::new(&camel_case(&sig.ident.to_string()), sig.ident.span()),
        inputs,
        output: ok_type(&sig.output)?,
    })
}

/// `BankAccount` → `bank_account`.
fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_become_module_names() {
        assert_eq!(snake_case("Counter"), "counter");
        assert_eq!(snake_case("BankAccount"), "bank_account");
    }

    #[test]
    fn an_operation_needs_mut_self_and_the_context() {
        let item: ItemImpl = syn::parse_quote!(
            impl Counter {
                fn add(&self, amount: i64) -> Result<i64, Failure> {
                    Ok(amount)
                }
            }
        );
        let err = expand(Args::default(), item).err().unwrap();
        assert!(err.to_string().contains("&mut self"), "{err}");
        let item: ItemImpl = syn::parse_quote!(
            impl Counter {
                fn add(&mut self, ctx: &mut EntityContext, amount: i64) -> i64 {
                    amount
                }
            }
        );
        let err = expand(Args::default(), item).err().unwrap();
        assert!(err.to_string().contains("Result"), "{err}");
    }

    #[test]
    fn methods_become_operation_types_constructors_and_a_builder() {
        let item: ItemImpl = syn::parse_quote!(
            impl Counter {
                pub fn add(&mut self, ctx: &mut EntityContext, amount: i64) -> Result<i64, Failure> {
                    Ok(amount)
                }
                pub fn reset(&mut self, ctx: &mut EntityContext) -> Result<(), Failure> {
                    Ok(())
                }
            }
        );
        let out = expand(Args::default(), item).unwrap().to_string();
        for expected in [
            "pub mod counter",
            "pub struct Add (pub i64) ;",
            "pub struct Reset ;",
            "const NAME : & 'static str = \"add\"",
            "pub fn add (key : & :: engine :: entity :: EntityKey < Counter >",
            "pub fn operations ()",
        ] {
            assert!(out.contains(expected), "{expected} in {out}");
        }
    }
}
